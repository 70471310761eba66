"""Summing per-weight values over each structure's block, and the normalisation that ranks heads with channels.

A query head's block is its q rows and o columns plus its share of the KV head it reads (k and v rows,
divided among the query heads still reading it); a channel's block is its gate and up rows and down column.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.engine.methods.base import LayerScores
from core.engine.structures import Geometry
from core.pruning_spec import Normalization

Element = Callable[[nn.Linear], torch.Tensor]


def head_sums(
    layer: nn.Module, head_dim: int, element: Element
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query head: (own q+o sum, its KV head's k+v sum, number of alive query heads sharing that KV head)."""
    attention = layer.self_attn
    q, k, v, o, kv_index = (
        attention.q_proj,
        attention.k_proj,
        attention.v_proj,
        attention.o_proj,
        attention.kv_index,
    )
    heads = q.out_features // head_dim
    if heads == 0:
        empty = torch.zeros(0, device=q.weight.device)
        return empty, empty, empty
    own = element(q).view(heads, -1).sum(1) + element(o).view(o.out_features, heads, head_dim).sum((0, 2))
    kv_heads = k.out_features // head_dim
    kv = element(k).view(kv_heads, -1).sum(1) + element(v).view(kv_heads, -1).sum(1)
    readers = torch.bincount(kv_index, minlength=kv_heads).to(own.dtype)
    return own, kv[kv_index], readers[kv_index]


def channel_sums(layer: nn.Module, element: Element) -> torch.Tensor:
    mlp = layer.mlp
    return element(mlp.gate_proj).sum(1) + element(mlp.up_proj).sum(1) + element(mlp.down_proj).sum(0)


def normalised(
    own: torch.Tensor,
    kv: torch.Tensor,
    readers: torch.Tensor,
    channels: torch.Tensor,
    g: Geometry,
    normalization: Normalization,
) -> LayerScores:
    """Block-wise normalisation so heads and channels compete in one ranking."""
    head_total = own + kv / readers.clamp(min=1)
    if normalization is Normalization.reference:
        return LayerScores(
            head_total / (4 * g.head_dim * g.hidden_size), channels / (3 * g.intermediate_size)
        )
    block = 2 * g.head_dim * g.hidden_size + 2 * g.head_dim * g.hidden_size / readers.clamp(min=1)
    return LayerScores(head_total / block, channels / (3 * g.hidden_size))


def block_scores(
    model: nn.Module, g: Geometry, normalization: Normalization, element: Element
) -> list[LayerScores]:
    """``element`` summed over every head's and channel's block, normalised, layer by layer."""
    scores = []
    for layer in model.model.layers:
        own, kv, readers = head_sums(layer, g.head_dim, element)
        scores.append(normalised(own, kv, readers, channel_sums(layer, element), g, normalization))
    return scores
