"""The two floors every method is compared with: weight magnitude and random scores."""

from __future__ import annotations

import torch
from torch import nn

from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.blocks import block_scores
from core.engine.methods.gradients import calibration_loss
from core.engine.structures import Geometry, PruningState
from core.pruning_spec import Normalization


class MagnitudeScorer(Scorer):
    """Σ |W| over each structure's block, normalised like GISP's scores."""

    def score(self, step: StepInput) -> Scored:
        loss = calibration_loss(step.model, step.batches)
        return Scored(
            magnitude_scores(step.model, step.geometry, step.settings.experimental.normalization), loss
        )


class RandomScorer(Scorer):
    """Uniform random scores per alive structure, from the run's seed."""

    scores_alive_only = True

    def score(self, step: StepInput) -> Scored:
        loss = calibration_loss(step.model, step.batches)
        return Scored(random_scores(step.state, step.settings.seed), loss)


@torch.no_grad()
def magnitude_scores(model: nn.Module, g: Geometry, normalization: Normalization) -> list[LayerScores]:
    return block_scores(model, g, normalization, lambda linear: linear.weight.abs().float())


def random_scores(state: PruningState, seed: int) -> list[LayerScores]:
    generator = torch.Generator().manual_seed(seed)
    return [
        LayerScores(
            torch.rand(len(s.heads), generator=generator), torch.rand(len(s.channels), generator=generator)
        )
        for s in state.layers
    ]
