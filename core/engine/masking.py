"""A view that zeroes removed structures in a full-size copy instead of slicing them away.

Not used by production runs: benchmarks measure what slicing saves against it, and tests use it as an
independent check that slicing changes nothing but the cost (same removals, same losses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from core.engine.architectures import to_gisp_model
from core.engine.modeling.modeling_gisp import GispForCausalLM
from core.engine.structures import Geometry, LayerState, PruningState


class MaskedView:
    sliced = False

    def working_model(self, base: nn.Module) -> GispForCausalLM:
        return to_gisp_model(base, copy=True)  # masks write into the weights: never into the base's

    def present(self, alive: LayerState, geometry: Geometry) -> tuple[Sequence[int], Sequence[int]]:
        return range(geometry.num_heads), range(geometry.intermediate_size)

    @torch.no_grad()
    def remove(self, model: nn.Module, current: PruningState, target: PruningState) -> None:
        g = target.geometry
        hd = g.head_dim
        for layer, alive in zip(model.model.layers, target.layers):
            attention, mlp = layer.self_attn, layer.mlp
            for h in sorted(set(range(g.num_heads)) - set(alive.heads)):
                attention.q_proj.weight[h * hd : (h + 1) * hd] = 0
                attention.o_proj.weight[:, h * hd : (h + 1) * hd] = 0
            dead_channels = sorted(set(range(g.intermediate_size)) - set(alive.channels))
            if dead_channels:
                index = torch.tensor(dead_channels)
                mlp.gate_proj.weight[index] = 0
                mlp.up_proj.weight[index] = 0
                mlp.down_proj.weight[:, index] = 0

    def dead_features(self, state: PruningState) -> dict[str, list[int]] | None:
        removed = {}
        for layer in range(len(state.layers)):
            removed[f"{layer}.attn"], removed[f"{layer}.mlp"] = state.removed_features(layer)
        return removed


MASKED = MaskedView()
