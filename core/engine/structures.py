"""Prunable structures, the set still alive, and the parameter accounting every method shares.

Structures are named by their index in the *base* model (layer, kind, original index), so a trajectory
stays meaningful however the working model has been sliced since.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum


class Kind(IntEnum):
    head = 0  # one attention query head (and its KV head once no query head reads it)
    channel = 1  # one MLP intermediate channel


@dataclass(frozen=True)
class Structure:
    layer: int
    kind: Kind
    index: int

    def to_list(self) -> list[int]:
        return [self.layer, int(self.kind), self.index]

    @classmethod
    def from_list(cls, values: list[int]) -> Structure:
        layer, kind, index = values
        return cls(int(layer), Kind(int(kind)), int(index))


@dataclass(frozen=True)
class Geometry:
    """Shapes of the base model's decoder, as far as pruning and accounting need them."""

    num_layers: int
    hidden_size: int
    head_dim: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False  # gate/up bias (down bias is counted as fixed)
    down_bias: bool = False
    qk_norm: bool = False

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads

    def kv_of(self, head: int) -> int:
        """The base model's KV head that a query head reads."""
        return head // self.group_size

    @property
    def query_head_params(self) -> int:
        """Parameters a query head owns alone: its q rows (+ bias) and its o_proj columns."""
        return 2 * self.head_dim * self.hidden_size + (self.head_dim if self.qkv_bias else 0)

    @property
    def kv_head_params(self) -> int:
        return 2 * self.head_dim * self.hidden_size + (2 * self.head_dim if self.qkv_bias else 0)

    @property
    def channel_params(self) -> int:
        return 3 * self.hidden_size + (2 if self.mlp_bias else 0)

    @property
    def fixed_layer_params(self) -> int:
        """Parameters of a layer that no removal touches: norms and output biases."""
        fixed = 2 * self.hidden_size
        fixed += self.hidden_size if self.o_bias else 0
        fixed += self.hidden_size if self.down_bias else 0
        fixed += 2 * self.head_dim if self.qk_norm else 0
        return fixed

    def layer_params(self, heads: int, kv_heads: int, channels: int) -> int:
        return (
            heads * self.query_head_params
            + kv_heads * self.kv_head_params
            + channels * self.channel_params
            + self.fixed_layer_params
        )

    @property
    def dense_decoder_params(self) -> int:
        return self.num_layers * self.layer_params(self.num_heads, self.num_kv_heads, self.intermediate_size)

    def to_dict(self) -> dict[str, int | bool]:
        return dict(self.__dict__)


@dataclass
class LayerState:
    heads: list[int]
    kv_heads: list[int]
    channels: list[int]


@dataclass
class PruningState:
    """Which structures of the base model are alive; the single source of truth for sparsity."""

    geometry: Geometry
    layers: list[LayerState] = field(default_factory=list)

    @classmethod
    def dense(cls, geometry: Geometry) -> PruningState:
        layers = [
            LayerState(
                heads=list(range(geometry.num_heads)),
                kv_heads=list(range(geometry.num_kv_heads)),
                channels=list(range(geometry.intermediate_size)),
            )
            for _ in range(geometry.num_layers)
        ]
        return cls(geometry, layers)

    def copy(self) -> PruningState:
        return PruningState(
            self.geometry,
            [LayerState(list(s.heads), list(s.kv_heads), list(s.channels)) for s in self.layers],
        )

    def removed_features(self, layer: int) -> tuple[list[int], list[int]]:
        """Base-model input features of the layer's o_proj and down_proj whose heads / channels are removed."""
        g = self.geometry
        alive = self.layers[layer]
        heads = sorted(set(range(g.num_heads)) - set(alive.heads))
        channels = sorted(set(range(g.intermediate_size)) - set(alive.channels))
        return [h * g.head_dim + d for h in heads for d in range(g.head_dim)], channels

    def decoder_params(self) -> int:
        return sum(
            self.geometry.layer_params(len(s.heads), len(s.kv_heads), len(s.channels)) for s in self.layers
        )

    def sparsity(self) -> float:
        """Fraction of decoder-layer parameters removed (embeddings and LM head excluded)."""
        return 1.0 - self.decoder_params() / self.geometry.dense_decoder_params

    def structure_ratio(self) -> float:
        """Fraction of heads and channels removed, counted as structures regardless of size."""
        g = self.geometry
        total = g.num_layers * (g.num_heads + g.intermediate_size)
        alive = sum(len(s.heads) + len(s.channels) for s in self.layers)
        return 1.0 - alive / total

    def remove(self, structure: Structure) -> None:
        if not self.is_alive(structure):
            raise ValueError(f"{structure} is not alive")
        self.remove_all([structure])

    def remove_all(self, structures: Iterable[Structure]) -> None:
        """``remove`` for many at once: each layer's lists are rebuilt once, not searched per structure."""
        heads: dict[int, set[int]] = {}
        channels: dict[int, set[int]] = {}
        for structure in structures:
            target = heads if structure.kind is Kind.head else channels
            target.setdefault(structure.layer, set()).add(structure.index)
        for index, removed in channels.items():
            layer = self.layers[index]
            layer.channels = [c for c in layer.channels if c not in removed]
        for index, removed in heads.items():
            layer = self.layers[index]
            layer.heads = [h for h in layer.heads if h not in removed]
            read = {self.geometry.kv_of(h) for h in layer.heads}
            layer.kv_heads = [kv for kv in layer.kv_heads if kv in read]

    def is_alive(self, structure: Structure) -> bool:
        layer = self.layers[structure.layer]
        pool = layer.heads if structure.kind is Kind.head else layer.channels
        return structure.index in pool

    def counts(self) -> list[dict[str, int]]:
        return [
            {"heads": len(s.heads), "kv_heads": len(s.kv_heads), "channels": len(s.channels)}
            for s in self.layers
        ]

    def kv_head_of_query(self, layer: int) -> list[int]:
        """For each alive query head, the position of its KV head among the layer's alive KV heads."""
        state = self.layers[layer]
        position = {kv: i for i, kv in enumerate(state.kv_heads)}
        return [position[self.geometry.kv_of(h)] for h in state.heads]


class RemovalCosts:
    """Parameters freed by removing structures one after another from ``state``, which stays untouched.

    A query head frees its KV head too when it is the last reader: the count of readers is kept per KV
    head, so each call is O(1) and a caller can stop at the first removal that reaches its target.
    """

    def __init__(self, state: PruningState) -> None:
        self.geometry = state.geometry
        self.readers = Counter(
            (layer, self.geometry.kv_of(h)) for layer, alive in enumerate(state.layers) for h in alive.heads
        )

    def __call__(self, structure: Structure) -> int:
        g = self.geometry
        if structure.kind is Kind.channel:
            return g.channel_params
        key = (structure.layer, g.kv_of(structure.index))
        self.readers[key] -= 1
        return g.query_head_params + (g.kv_head_params if self.readers[key] == 0 else 0)
