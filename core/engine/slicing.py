"""Physical removal of heads and channels from a GispForCausalLM, keeping its config in step.

Slicing (rather than masking) is what makes later pruning steps, and the final checkpoint, cheaper:
removed rows and columns stop costing FLOPs and memory at once.
"""

from __future__ import annotations

import torch
from torch import nn

from core.engine.structures import PruningState


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> None:
    """Keep ``index`` along ``dim`` of the weight (0: outputs, 1: inputs); replaces the tensors."""
    index = index.to(linear.weight.device)
    requires_grad = linear.weight.requires_grad
    weight = linear.weight.detach().index_select(dim, index).clone()
    linear.weight = nn.Parameter(weight, requires_grad=requires_grad)
    if dim == 0:
        linear.out_features = weight.shape[0]
        if linear.bias is not None:
            linear.bias = nn.Parameter(
                linear.bias.detach().index_select(0, index).clone(), requires_grad=linear.bias.requires_grad
            )
    else:
        linear.in_features = weight.shape[1]


def _rows_of_heads(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    return (heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)


def keep_positions(current: list[int], wanted: list[int]) -> torch.Tensor:
    """Positions in the working model's tensors of the structures (original indices) that stay."""
    where = {original: position for position, original in enumerate(current)}
    return torch.tensor([where[w] for w in wanted], dtype=torch.long)


def slice_layer(model: nn.Module, layer: int, current: PruningState, target: PruningState) -> None:
    """Shrink one decoder layer of ``model`` from ``current`` to ``target`` (a subset of it)."""
    block = model.model.layers[layer]
    config = model.config
    g = current.geometry
    now, goal = current.layers[layer], target.layers[layer]
    if goal.heads != now.heads:
        attention = block.self_attn
        q_keep = _rows_of_heads(keep_positions(now.heads, goal.heads), g.head_dim)
        kv_keep = _rows_of_heads(keep_positions(now.kv_heads, goal.kv_heads), g.head_dim)
        _slice_linear(attention.q_proj, q_keep, 0)
        _slice_linear(attention.o_proj, q_keep, 1)
        if goal.kv_heads != now.kv_heads:
            _slice_linear(attention.k_proj, kv_keep, 0)
            _slice_linear(attention.v_proj, kv_keep, 0)
        mapping = target.kv_head_of_query(layer)
        attention.kv_index = torch.tensor(mapping, dtype=torch.long, device=attention.q_proj.weight.device)
        config.num_attention_heads[layer] = len(goal.heads)
        config.num_key_value_heads[layer] = len(goal.kv_heads)
        config.kv_head_of_query[layer] = mapping
    if goal.channels != now.channels:
        mlp = block.mlp
        keep = keep_positions(now.channels, goal.channels)
        _slice_linear(mlp.gate_proj, keep, 0)
        _slice_linear(mlp.up_proj, keep, 0)
        _slice_linear(mlp.down_proj, keep, 1)
        config.intermediate_size[layer] = len(goal.channels)


def slice_model(model: nn.Module, current: PruningState, target: PruningState) -> None:
    for layer in range(current.geometry.num_layers):
        slice_layer(model, layer, current, target)
