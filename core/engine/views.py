"""How the working model shows the structures still alive: sliced away (production) or merely masked.

The pruning loop asks its view three things: which base-model heads and channels the working model still
computes (so scores can be matched to structures), how to apply a step's removals, and which computed input
features no longer count. Slicing answers "only the alive ones", "cut the tensors", "none"; the masked view
(``core.engine.masking``, for benchmarks and as the tests' oracle of slicing) answers otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from torch import nn

from core.engine.architectures import to_gisp_model
from core.engine.modeling.modeling_gisp import GispForCausalLM
from core.engine.slicing import slice_model
from core.engine.structures import Geometry, LayerState, PruningState


class StructureView(Protocol):
    sliced: bool

    def working_model(self, base: nn.Module) -> GispForCausalLM: ...

    def present(self, alive: LayerState, geometry: Geometry) -> tuple[Sequence[int], Sequence[int]]:
        """Base-model indices of the heads and channels the working model computes, in its order."""
        ...

    def remove(self, model: nn.Module, current: PruningState, target: PruningState) -> None: ...

    def dead_features(self, state: PruningState) -> dict[str, list[int]] | None:
        """Per output projection, inputs still computed but no longer used (None: there are none)."""
        ...


class SlicedView:
    """Removed structures are cut out of the working model's tensors: later steps get cheaper."""

    sliced = True

    def working_model(self, base: nn.Module) -> GispForCausalLM:
        return to_gisp_model(base)  # shares the base's tensors; slicing replaces rather than writes them

    def present(self, alive: LayerState, geometry: Geometry) -> tuple[Sequence[int], Sequence[int]]:
        return alive.heads, alive.channels

    def remove(self, model: nn.Module, current: PruningState, target: PruningState) -> None:
        slice_model(model, current, target)

    def dead_features(self, state: PruningState) -> dict[str, list[int]] | None:
        return None


SLICED = SlicedView()
