"""The global ranking of every alive structure, and the choice of what a step removes.

Scores are kept in flat arrays, one row per structure, rather than one Python object each: a 7B model has
about 350 k heads and channels, and ranking them as objects took longer than a GPU step's gradients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.engine.methods.base import LayerScores
from core.engine.structures import Geometry, Kind, PruningState, RemovalCosts, Structure
from core.errors import UserInputError


@dataclass(frozen=True)
class ScoreTable:
    """One score per structure, keyed by its base-model identity so that scores outlive slicing."""

    scores: np.ndarray  # float64
    layers: np.ndarray  # int64, like the three below
    kinds: np.ndarray
    indices: np.ndarray

    @classmethod
    def from_layer_scores(
        cls, state: PruningState, scores: Sequence[LayerScores], geometry: Geometry, physical: bool
    ) -> ScoreTable:
        """Attach each score to its structure; masked models score dead structures too, dropped here."""
        parts: list[tuple[np.ndarray, int, Kind, Sequence[int]]] = []
        for layer, (alive, layer_scores) in enumerate(zip(state.layers, scores)):
            heads = alive.heads if physical else range(geometry.num_heads)
            channels = alive.channels if physical else range(geometry.intermediate_size)
            parts.append((_numpy(layer_scores.heads), layer, Kind.head, heads))
            parts.append((_numpy(layer_scores.channels), layer, Kind.channel, channels))
        table = cls(
            np.concatenate([values for values, *_ in parts]) if parts else np.zeros(0),
            np.concatenate([np.full(len(v), layer, dtype=np.int64) for v, layer, *_ in parts]),
            np.concatenate([np.full(len(v), int(kind), dtype=np.int64) for v, _, kind, _ in parts]),
            np.concatenate([np.asarray(list(index), dtype=np.int64) for *_, index in parts]),
        )
        return table if physical else table.alive_in(state)

    def __len__(self) -> int:
        return len(self.scores)

    def structure(self, row: int) -> Structure:
        return Structure(int(self.layers[row]), Kind(int(self.kinds[row])), int(self.indices[row]))

    def alive_in(self, state: PruningState) -> ScoreTable:
        """The rows whose structure ``state`` still holds."""
        g = state.geometry
        heads = np.zeros((g.num_layers, g.num_heads), dtype=bool)
        channels = np.zeros((g.num_layers, g.intermediate_size), dtype=bool)
        for layer, alive in enumerate(state.layers):
            heads[layer, alive.heads] = True
            channels[layer, alive.channels] = True
        is_head = self.kinds == int(Kind.head)
        keep = np.where(
            is_head,
            heads[self.layers, np.where(is_head, self.indices, 0)],
            channels[self.layers, np.where(is_head, 0, self.indices)],
        )
        return ScoreTable(self.scores[keep], self.layers[keep], self.kinds[keep], self.indices[keep])

    def ascending(self, layers: Sequence[int]) -> np.ndarray:
        """Rows of the given layers, least important first; ties break on (layer, kind, index)."""
        rows = np.flatnonzero(np.isin(self.layers, np.asarray(list(layers), dtype=np.int64)))
        order = np.lexsort((self.indices[rows], self.kinds[rows], self.layers[rows], self.scores[rows]))
        return rows[order]

    def by_structure(self) -> dict[tuple[int, int, int], float]:
        keys = zip(self.layers.tolist(), self.kinds.tolist(), self.indices.tolist())
        return dict(zip(keys, self.scores.tolist()))


def _numpy(values: torch.Tensor) -> np.ndarray:
    return values.detach().cpu().double().numpy()


def select(
    state: PruningState, table: ScoreTable, eligible: Sequence[int], target: float
) -> tuple[PruningState, list[Structure], float]:
    """Remove the lowest-ranked eligible structures until the measured sparsity reaches ``target``.

    Overshoot is below one structure's parameters. Returns the new state, the removals in order, and the
    score of the last one (the step's threshold).
    """
    needed = state.geometry.dense_decoder_params * (1.0 - target)
    remaining = state.decoder_params()
    cost = RemovalCosts(state)
    removed: list[Structure] = []
    threshold = float("-inf")
    if remaining > needed + 1e-6:
        for row in table.ascending(eligible):
            if remaining <= needed + 1e-6:
                break
            structure = table.structure(int(row))
            remaining -= cost(structure)
            removed.append(structure)
            threshold = float(table.scores[row])
    if remaining > needed + 1e-6:
        raise UserInputError(
            f"sparsity {target:.3f} cannot be reached with the unprotected layers alone",
            field="sparsities",
        )
    new_state = state.copy()
    new_state.remove_all(removed)
    return new_state, removed, threshold


def select_count(
    state: PruningState, table: ScoreTable, eligible: Sequence[int], removed_total: int
) -> tuple[PruningState, list[Structure], float]:
    """Remove the lowest-ranked eligible structures until ``removed_total`` structures are gone in all.

    gisp-paper's selection: its schedule counts structures, whatever their size. Removed structures count
    toward the total (the authors keep them, at score 0, at the bottom of their ranking).
    """
    g = state.geometry
    already = g.num_layers * (g.num_heads + g.intermediate_size) - sum(
        len(alive.heads) + len(alive.channels) for alive in state.layers
    )
    removed: list[Structure] = []
    threshold = float("-inf")
    for row in table.ascending(eligible)[: max(0, removed_total - already)]:
        removed.append(table.structure(int(row)))
        threshold = float(table.scores[row])
    new_state = state.copy()
    new_state.remove_all(removed)
    return new_state, removed, threshold


def survivor_scores(state: PruningState, table: ScoreTable) -> list[dict[str, list[float]]]:
    """Each surviving structure's last score (0.0 where it has none), in the state's order."""
    scores = table.by_structure()
    head, channel = int(Kind.head), int(Kind.channel)
    return [
        {
            "heads": [scores.get((layer, head, h), 0.0) for h in alive.heads],
            "channels": [scores.get((layer, channel, c), 0.0) for c in alive.channels],
        }
        for layer, alive in enumerate(state.layers)
    ]
