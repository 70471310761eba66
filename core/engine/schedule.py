"""Which sparsity each pruning step aims at.

A run to several targets is one run to the largest: the T schedule points are spread linearly or along a
cosine, and every requested target is inserted as a step boundary so the trajectory lands on it exactly.
"""

from __future__ import annotations

import math

import torch

from core.errors import UserInputError
from core.pruning_spec import PruneSettings, Schedule


def step_targets(settings: PruneSettings) -> list[float]:
    """Every step's target: a sparsity, or for gisp-paper a structure ratio (``paper_ratios``)."""
    if settings.traits.exact:
        return paper_ratios(settings.step_count, settings.experimental.structure_ratio)
    top = settings.max_sparsity
    steps = settings.step_count
    if settings.experimental.schedule is Schedule.cosine:
        points = [top * (1 - math.cos(math.pi * t / steps)) / 2 for t in range(1, steps + 1)]
    else:
        points = [top * t / steps for t in range(1, steps + 1)]
    merged = sorted({round(p, 9) for p in (*points, *settings.sparsities)})
    return [p for p in merged if p > 0]


def protected_layers(settings: PruneSettings, num_layers: int) -> list[int]:
    """By default the first 10 % of layers and the last one, which pruning hurts most (none for FLAP and
    Wanda-sp, whose official code prunes every layer)."""
    if settings.protected_layers is None and not settings.traits.protects_layers:
        return []
    if settings.protected_layers is not None:
        outside = [layer for layer in settings.protected_layers if layer >= num_layers]
        if outside:
            raise UserInputError(
                f"layers {outside} do not exist; this model has {num_layers} layers", field="protected_layers"
            )
        return sorted(set(settings.protected_layers))
    first = int(num_layers * settings.experimental.protected_first_fraction)
    layers = set(range(first))
    if settings.experimental.protect_last_layer:
        layers.add(num_layers - 1)
    return sorted(layers)


def paper_ratios(steps: int, ratio: float) -> list[float]:
    """The authors' schedule: ``torch.linspace(0, ratio, steps)`` in float32, a fraction of all structures.

    Their first point is 0 (their selection still removes one structure there); one step ends at ``ratio``.
    """
    if steps == 1:
        return [float(torch.tensor(ratio, dtype=torch.float32))]
    return [float(r) for r in torch.linspace(0, ratio, steps, dtype=torch.float32)]


def paper_removal_count(total: int, ratio: float) -> int:
    """How many structures (of ``total``, protected and removed ones included) the authors' step at
    ``ratio`` leaves removed: their k-th value threshold with k = N - int(N·(1 - r)) + 1, in float32."""
    kept = int(total * (1 - torch.tensor(ratio, dtype=torch.float32)))
    return total - kept + 1
