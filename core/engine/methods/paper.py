"""GISP as its authors' code computes it (uncc-efficient-ai/GISP, pruners/grad_sp_global.py), for comparison.

Per weight |W ⊙ ḡ|, ḡ the gradient of the calibration loss over the whole calibration set. A head sums its
q rows and o_proj columns, and with multi-head attention (one KV head per query head) its k and v rows too;
with grouped-query attention the authors skip k and v (a query head is removed by masking, its KV head stays).
Heads are divided by 4·head_dim·hidden and channels (gate and up rows, down column) by 3·intermediate, the
constants of their code, whatever the structure's actual size. No bias compensation, no centring.
"""

from __future__ import annotations

import torch
from torch import nn

from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.blocks import channel_sums, head_sums
from core.engine.methods.gradients import accumulate_gradients, prepare_for_gradients
from core.engine.structures import Geometry


class PaperTaylorScorer(Scorer):
    """The authors' first-order score; the loop gives it the same calibration set at every step."""

    def prepare(self, model: nn.Module) -> None:
        prepare_for_gradients(model)

    def score(self, step: StepInput) -> Scored:
        loss = accumulate_gradients(step.model, step.batches)
        return Scored(paper_scores(step.model, step.geometry), loss)


@torch.no_grad()
def paper_scores(model: nn.Module, g: Geometry) -> list[LayerScores]:
    def element(linear: nn.Linear) -> torch.Tensor:
        return (linear.weight.float() * linear.weight.grad.float()).abs()

    multi_head = g.num_kv_heads == g.num_heads
    scores = []
    for layer in model.model.layers:
        own, kv, _readers = head_sums(layer, g.head_dim, element)
        heads = own + kv if multi_head else own
        channels = channel_sums(layer, element)
        scores.append(
            LayerScores(heads / (4 * g.head_dim * g.hidden_size), channels / (3 * g.intermediate_size))
        )
    return scores
