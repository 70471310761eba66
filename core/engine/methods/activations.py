"""The activation methods: Wanda-sp and FLAP, both scored once from one forward pass on the dense model."""

from __future__ import annotations

import torch
from torch import nn

from core.engine.compensation import means_of_every_feature
from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.statistics import ActivationStatistics
from core.engine.structures import Geometry


class WandaSpScorer(Scorer):
    """Wanda-sp: Σ |W_out[:, j]| · ‖X_j‖, ranked within each layer so every layer loses the same fraction."""

    def score(self, step: StepInput) -> Scored:
        stats = ActivationStatistics(step.model).collect(step.model, step.batches)
        scores = uniform_quantiles(wanda_sp_scores(step.model, step.geometry, stats), step.eligible)
        return Scored(scores, stats.loss)


class FlapScorer(Scorer):
    """FLAP: fluctuation Var(X_j)·‖W[:, j]‖², standardised, one global ranking, bias compensation built in."""

    def score(self, step: StepInput) -> Scored:
        stats = ActivationStatistics(step.model).collect(step.model, step.batches)
        scores = flap_scores(step.model, step.geometry, stats)
        return Scored(scores, stats.loss, compensation=means_of_every_feature(stats))


@torch.no_grad()
def wanda_sp_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """Wanda-sp: Σ |W_out[:, j]| · ‖X_j‖ over the output projection's input features of each structure."""
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        head_features = o.weight.abs().float().sum(0) * stats.norm(f"{index}.attn")
        channel = down.weight.abs().float().sum(0) * stats.norm(f"{index}.mlp")
        scores.append(LayerScores(head_features.view(-1, g.head_dim).sum(1), channel))
    return scores


@torch.no_grad()
def flap_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """FLAP: fluctuation Var(X_j)·‖W[:, j]‖², standardised per layer and kind for one adaptive ranking."""
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        heads = (stats.variance(f"{index}.attn") * o.weight.float().pow(2).sum(0)).view(-1, g.head_dim).sum(1)
        channels = stats.variance(f"{index}.mlp") * down.weight.float().pow(2).sum(0)
        scores.append(LayerScores(heads, channels))
    return _standardised(scores)


def _standardised(scores: list[LayerScores]) -> list[LayerScores]:
    def standardise(values: torch.Tensor) -> torch.Tensor:
        if values.numel() < 2:
            return values - values.mean() if values.numel() else values
        return (values - values.mean()) / values.std().clamp(min=1e-12)

    return [LayerScores(standardise(s.heads), standardise(s.channels)) for s in scores]


def uniform_quantiles(scores: list[LayerScores], eligible: list[int]) -> list[LayerScores]:
    """Replace scores by their rank fraction within each (layer, kind).

    Ranked globally, these remove the same fraction of heads and of channels from every eligible layer:
    Wanda-sp's uniform per-layer sparsity, expressed in the shared loop.
    """

    def quantile(values: torch.Tensor) -> torch.Tensor:
        n = values.numel()
        if n == 0:
            return values
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[torch.argsort(values, stable=True)] = torch.arange(n, dtype=torch.float32)
        return (ranks + 1) / n

    return [
        LayerScores(quantile(s.heads), quantile(s.channels)) if i in eligible else s
        for i, s in enumerate(scores)
    ]
