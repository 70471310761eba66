"""Bias compensation: a removed feature's mean input, times its output weights, stays in the output bias.

FLAP's closed form, b = b_base + W_out[:, removed] · mean(removed). One object carries it through a run:
the means live in ``trajectory.compensation`` (one per base-model feature, "<layer>.attn" / "<layer>.mlp"),
so any point of the trajectory, a resumed run and every checkpoint get exactly the same biases. Under GISP
each mean is measured in the gradient pass of the step that removes the feature, on the model it is removed
from (survivors keep their latest measurement); FLAP measures all of them once, on the dense model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from core.engine.statistics import ActivationStatistics
from core.engine.structures import Geometry, PruningState
from core.engine.trajectory import Trajectory
from core.engine.views import StructureView

Means = dict[str, list[float]]


class BiasCompensation:
    """The run's compensation means, and the hook that writes them into a model's output biases."""

    def __init__(self, base: nn.Module, geometry: Geometry, means: Means) -> None:
        self.base = base
        self.geometry = geometry
        self.means = means

    @classmethod
    def for_run(cls, base: nn.Module, trajectory: Trajectory) -> BiasCompensation:
        """The trajectory's means (all zero for a new run, so every bias starts as the base's)."""
        g = trajectory.geometry
        if trajectory.compensation is None:
            trajectory.compensation = {}
            for layer in range(g.num_layers):
                trajectory.compensation[f"{layer}.attn"] = [0.0] * (g.num_heads * g.head_dim)
                trajectory.compensation[f"{layer}.mlp"] = [0.0] * g.intermediate_size
        return cls(base, g, trajectory.compensation)

    def _head_features(self, heads: Iterable[int]) -> list[int]:
        hd = self.geometry.head_dim
        return [h * hd + d for h in heads for d in range(hd)]

    def observe(self, stats: ActivationStatistics, state: PruningState, view: StructureView) -> None:
        """Record this pass's mean input of every alive feature; dead ones keep their removal-time mean."""
        for layer, alive in enumerate(state.layers):
            heads, channels = view.present(alive, self.geometry)
            for key, features, live in (
                (f"{layer}.attn", self._head_features(heads), set(self._head_features(alive.heads))),
                (f"{layer}.mlp", list(channels), set(alive.channels)),
            ):
                if not live:
                    continue
                values = stats.mean(key).tolist()
                for position, feature in enumerate(features):
                    if feature in live:
                        self.means[key][feature] = round(values[position], 7)

    def apply(self, model: nn.Module, state: PruningState) -> None:
        """Set every o_proj and down_proj bias to the base bias plus its dead features' compensation."""
        compensate_biases(model, self.base, self.means, state)


def means_of_every_feature(stats: ActivationStatistics) -> Means:
    """FLAP's record: the dense model's mean input of every feature, as a trajectory stores it."""
    return {key: [round(v, 7) for v in stats.mean(key).tolist()] for key in stats.sums}


@torch.no_grad()
def compensate_checkpoint(model: nn.Module, base: nn.Module, means: Means, state: PruningState) -> None:
    """A checkpoint's biases from the trajectory's means; its config then declares the output biases."""
    compensate_biases(model, base, means, state)
    model.config.o_proj_bias = True
    model.config.down_proj_bias = True


@torch.no_grad()
def compensate_biases(model: nn.Module, base: nn.Module, means: Means, state: PruningState) -> None:
    """Set each o_proj / down_proj bias to the base bias plus W_base[:, removed] · mean(removed).

    Computed from the base model every time, so the pruning loop (which calls it after every step) and a
    checkpoint rebuilt from the trajectory get the very same biases.
    """
    for index, layer in enumerate(model.model.layers):
        base_layer = base.model.layers[index]
        features, channels = state.removed_features(index)
        _set_bias(layer.self_attn.o_proj, base_layer.self_attn.o_proj, features, means[f"{index}.attn"])
        _set_bias(layer.mlp.down_proj, base_layer.mlp.down_proj, channels, means[f"{index}.mlp"])


def _set_bias(linear: nn.Linear, base: nn.Linear, removed: list[int], means: list[float]) -> None:
    weight = base.weight
    bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    if base.bias is not None:
        bias += base.bias.detach()
    if removed:
        index = torch.tensor(removed, device=weight.device)
        mean = torch.tensor(means, dtype=torch.float32, device=weight.device)[index]
        bias += (weight.detach().float()[:, index] @ mean).to(bias.dtype)
    linear.bias = nn.Parameter(bias, requires_grad=False)
