"""GISP's first-order score: Σ |W ⊙ ḡ| over each structure's weights, block-normalised."""

from __future__ import annotations

import torch
from torch import nn

from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.blocks import block_scores
from core.engine.methods.gradients import accumulate_gradients, output_bias_gradients, prepare_for_gradients
from core.engine.statistics import ActivationStatistics, output_projections
from core.engine.structures import Geometry
from core.pruning_spec import Normalization


class TaylorScorer(Scorer):
    """ḡ from one gradient pass over the step's batches (the output biases' too under compensation)."""

    def prepare(self, model: nn.Module) -> None:
        prepare_for_gradients(model)

    def score(self, step: StepInput) -> Scored:
        model, compensation = step.model, step.compensation
        stats = ActivationStatistics(model) if compensation is not None else None
        with output_bias_gradients(model, enabled=compensation is not None):
            loss = accumulate_gradients(model, step.batches, stats)
            means = None
            if compensation is not None and stats is not None:
                compensation.observe(stats, step.state, step.view)
                means = stats.means()
            scores = taylor_scores(model, step.geometry, step.settings.experimental.normalization, means)
        return Scored(scores, loss)


@torch.no_grad()
def taylor_scores(
    model: nn.Module,
    g: Geometry,
    normalization: Normalization,
    input_means: dict[str, torch.Tensor] | None = None,
) -> list[LayerScores]:
    """Σ |W ⊙ ḡ| over each structure's weights, block-normalised (ḡ left in ``.grad``).

    With ``input_means`` (bias compensation: a removed feature's mean input stays in the output bias) the
    output projections' gradients are centred, ḡ - ḡ_bias ⊗ ā: removing a feature then changes the output
    only by its deviation from the mean, so a feature that is large but nearly constant is not kept for it.
    The output biases must hold their gradients (``output_bias_gradients``).
    """
    centred: dict[int, torch.Tensor] = {}
    if input_means is not None:
        for key, linear in output_projections(model):
            bias_grad = linear.bias.grad.float()
            mean = input_means[key].to(bias_grad.device)
            centred[id(linear)] = linear.weight.grad.float() - bias_grad[:, None] * mean[None, :]

    def element(linear: nn.Linear) -> torch.Tensor:
        gradient = centred.get(id(linear))
        if gradient is None:
            gradient = linear.weight.grad.float()
        return (linear.weight.float() * gradient).abs()

    return block_scores(model, g, normalization, element)
