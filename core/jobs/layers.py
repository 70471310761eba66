"""Per-layer sizes of a subnetwork on a trajectory, read from the stored JSON (no torch, no engine import).

A trajectory lists, per step, the structures removed as ``[layer, kind, index]`` (kind 0: a query head,
1: an MLP channel) in base-model indices. Replaying the steps up to a sparsity gives each layer's alive heads
and channels; a KV head lives while one of its query heads does (``head // (heads / kv_heads)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

HEAD, CHANNEL = 0, 1
LABEL_TOLERANCE = 5e-5  # labels round sparsities to 4 decimals


@dataclass(frozen=True)
class Counts:
    heads: int
    kv_heads: int
    channels: int

    def as_dict(self) -> dict[str, int]:
        return {"heads": self.heads, "kv_heads": self.kv_heads, "channels": self.channels}


class BeyondTrajectory(ValueError):
    """The sparsity asked for lies beyond the last step of the trajectory."""


def dense_counts(trajectory: dict[str, Any]) -> Counts:
    g = trajectory["geometry"]
    return Counts(int(g["num_heads"]), int(g["num_kv_heads"]), int(g["intermediate_size"]))


def step_for(trajectory: dict[str, Any], sparsity: float) -> int:
    """How many steps reach ``sparsity``: the first step whose measured sparsity is at least it (0: dense)."""
    if sparsity <= 0:
        return 0
    for position, step in enumerate(trajectory["steps"], start=1):
        if float(step["sparsity"]) >= sparsity - LABEL_TOLERANCE:
            return position
    reached = trajectory["steps"][-1]["sparsity"] if trajectory["steps"] else 0.0
    raise BeyondTrajectory(f"sparsity {sparsity:.4f} lies beyond the trajectory, which reaches {reached:.4f}")


def counts_after(trajectory: dict[str, Any], steps: int) -> list[Counts]:
    """Each layer's alive query heads, KV heads and channels after the first ``steps`` steps."""
    g = trajectory["geometry"]
    layers, heads, kv_heads = int(g["num_layers"]), int(g["num_heads"]), int(g["num_kv_heads"])
    group = heads // kv_heads
    alive_heads = [set(range(heads)) for _ in range(layers)]
    channels = [int(g["intermediate_size"])] * layers
    for step in trajectory["steps"][:steps]:
        for layer, kind, index in step["removed"]:
            if kind == HEAD:
                alive_heads[layer].discard(index)
            elif kind == CHANNEL:
                channels[layer] -= 1
    return [
        Counts(len(alive), len({h // group for h in alive}), channels[layer])
        for layer, alive in enumerate(alive_heads)
    ]


def counts_from_manifest(manifest: dict[str, Any]) -> list[Counts]:
    """The ``layers`` of a checkpoint's gisp_manifest.json (what the checkpoint really holds)."""
    return [Counts(int(x["heads"]), int(x["kv_heads"]), int(x["channels"])) for x in manifest["layers"]]
