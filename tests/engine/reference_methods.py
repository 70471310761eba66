"""Direct transcriptions of the original methods' code, in plain torch on a transformers model.

Written from the authors' sources, not from the engine, so a test can hold the engine's methods to them:
each function masks the model the way the original does (weights set to zero) and returns the structures it
removes, as (layer, kind, index) with kind 0 = head, 1 = channel. Sources (read for formulas, not copied):

- GISP: uncc-efficient-ai/GISP, external_code/GISP/pruners/grad_sp_global.py (``obtain_info_iterative``,
  ``prune_oneshot``, ``prune_iterative``) and pruners/non_uniform_pruner.py (``fill_information``,
  ``ratio_scheduling``); run settings from script/GISP/c4/GISPv2_0_llama3_8b_c4.yml.
"""

from __future__ import annotations

import torch
from torch import nn

Removal = tuple[int, int, int]


def _protected(num_layers: int) -> set[int]:
    """``prune_skip``: layers outside range(int(L·0.1), L - 1) keep every structure (score set to inf)."""
    return {layer for layer in range(num_layers) if layer not in range(int(num_layers * 0.1), num_layers - 1)}


def gisp_paper_removals(
    model: nn.Module, batches: list[torch.Tensor], steps: int, ratio: float
) -> list[set[Removal]]:
    """The structures each of the authors' GISP steps removes (masking ``model`` in place)."""
    config = model.config
    layers = model.model.layers
    heads, hidden = config.num_attention_heads, config.hidden_size
    head_dim = config.head_dim
    intermediate = config.intermediate_size
    gqa = config.num_key_value_heads < heads
    protected = _protected(len(layers))
    ratios = torch.linspace(0, ratio, steps) if steps > 1 else torch.tensor([ratio])
    removed_heads = torch.zeros(len(layers), heads, dtype=torch.bool)
    removed_channels = torch.zeros(len(layers), intermediate, dtype=torch.bool)
    history: list[set[Removal]] = []
    for r in ratios:
        # fill_information: Σ over batches of (mean token loss × batch size), backward, no averaging
        model.zero_grad(set_to_none=True)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        for ids in batches:
            loss = model(ids, labels=ids).loss * ids.shape[0]
            loss.backward()
        head_metric, channel_metric = [], []
        for layer in layers:
            attn, mlp = layer.self_attn, layer.mlp

            def first(linear: nn.Linear, transpose: bool = False) -> torch.Tensor:
                value = (linear.weight * linear.weight.grad).abs().detach()
                return value.t() if transpose else value

            head = first(attn.q_proj).reshape(heads, -1).sum(1) + first(attn.o_proj, True).reshape(
                heads, -1
            ).sum(1)
            if not gqa:  # with GQA the authors skip k and v
                head = head + first(attn.k_proj).reshape(heads, -1).sum(1)
                head = head + first(attn.v_proj).reshape(heads, -1).sum(1)
            channel = (
                first(mlp.gate_proj).sum(1) + first(mlp.up_proj).sum(1) + first(mlp.down_proj, True).sum(1)
            )
            head_metric.append(head / (4 * head_dim * hidden))
            channel_metric.append(channel / (3 * intermediate))
        for index in protected:
            head_metric[index] = torch.full_like(head_metric[index], torch.inf)
            channel_metric[index] = torch.full_like(channel_metric[index], torch.inf)
        metrics = torch.cat(head_metric + channel_metric)
        metrics = metrics + metrics.min().abs()
        n = metrics.numel()
        k = n - int(n * (1 - r)) + 1
        threshold = torch.kthvalue(metrics, k).values
        mask = metrics <= threshold
        new_heads = mask[: len(layers) * heads].view(len(layers), heads) & ~removed_heads
        new_channels = mask[len(layers) * heads :].view(len(layers), intermediate) & ~removed_channels
        removed_heads |= new_heads
        removed_channels |= new_channels
        history.append(
            {(int(i), 0, int(h)) for i, h in new_heads.nonzero()}
            | {(int(i), 1, int(c)) for i, c in new_channels.nonzero()}
        )
        _mask(model, removed_heads, removed_channels, head_dim, gqa)
    model.zero_grad(set_to_none=True)
    return history


@torch.no_grad()
def _mask(model: nn.Module, heads: torch.Tensor, channels: torch.Tensor, head_dim: int, gqa: bool) -> None:
    """Zero the removed structures' weights as the authors do; with GQA they mask the query head's copy of
    its KV states instead of k and v rows, which changes nothing once its q rows and o columns are zero."""
    for index, layer in enumerate(model.model.layers):
        rows = heads[index].repeat_interleave(head_dim)
        attn, mlp = layer.self_attn, layer.mlp
        attn.q_proj.weight[rows] = 0
        attn.o_proj.weight[:, rows] = 0
        if not gqa:
            attn.k_proj.weight[rows] = 0
            attn.v_proj.weight[rows] = 0
        mlp.gate_proj.weight[channels[index]] = 0
        mlp.up_proj.weight[channels[index]] = 0
        mlp.down_proj.weight[:, channels[index]] = 0
