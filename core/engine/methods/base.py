"""The protocol every pruning method implements, and what one scoring pass gets and gives back.

A method is a *scorer*: it prepares the working model once (which gradients it needs) and, when the loop
asks, scores every alive head and channel. Everything else (schedule, eligibility, global ranking, removal,
accounting, the trajectory) is the loop's, shared by all methods so their results compare at equal sparsity.
Whether a method scores at every step or once on the dense model is its trait in ``core.pruning_spec``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from core.engine.compensation import BiasCompensation, Means
from core.engine.objectives import Batch
from core.engine.structures import Geometry, PruningState
from core.engine.views import StructureView
from core.pruning_spec import PruneSettings


@dataclass
class LayerScores:
    """One layer's scores, lower = less important, in the working model's order of heads and channels."""

    heads: torch.Tensor  # (heads present,)
    channels: torch.Tensor  # (channels present,)


@dataclass
class StepInput:
    """Everything one scoring pass may read."""

    model: nn.Module
    state: PruningState
    geometry: Geometry
    settings: PruneSettings
    batches: list[Batch]
    protected: list[int]  # layers whose structures are never ranked
    compensation: BiasCompensation | None
    view: StructureView
    target: float = 0.0  # the step's target sparsity (what a per-target method prunes to)

    @property
    def eligible(self) -> list[int]:
        return [layer for layer in range(self.geometry.num_layers) if layer not in self.protected]


@dataclass
class Scored:
    scores: list[LayerScores]
    loss: float  # calibration loss of the model scored (NaN where the method computes none)
    compensation: Means | None = None  # means a method measures for the trajectory once (FLAP)


class Scorer(ABC):
    """One pruning method's scores. Subclasses are small; the registry in ``__init__`` names them."""

    # Scores only the alive structures whatever the view shows (drawn, not computed from the model).
    scores_alive_only: ClassVar[bool] = False

    def prepare(self, model: nn.Module) -> None:
        """Set which parameters need gradients; by default none (forward passes only)."""
        model.requires_grad_(False)

    @abstractmethod
    def score(self, step: StepInput) -> Scored: ...
