"""Direct transcriptions of the original methods' code, in plain torch on a transformers model.

Written from the authors' sources, not from the engine, so a test can hold the engine's methods to them:
each function masks the model the way the original does (weights set to zero) and returns the structures it
removes, as (layer, kind, index) with kind 0 = head, 1 = channel. Sources (read for formulas, not copied):

- GISP: uncc-efficient-ai/GISP, external_code/GISP/pruners/grad_sp_global.py (``obtain_info_iterative``,
  ``prune_oneshot``, ``prune_iterative``) and pruners/non_uniform_pruner.py (``fill_information``,
  ``ratio_scheduling``); run settings from script/GISP/c4/GISPv2_0_llama3_8b_c4.yml.
- FLAP and Wanda-sp: CASIA-IVA-Lab/FLAP, lib/prune.py (``prune_flap`` with its defaults WIFV and AL-AM,
  ``prune_wanda_sp``, ``compress``) and lib/layerwrapper.py (``BiasGPT``, ``WrappedGPT``). Their code
  handles multi-head attention only (k and v rows share the query heads' mask), so these do too.
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


def _output_projection_inputs(
    model: nn.Module, layers: list[int]
) -> tuple[dict[str, list[torch.Tensor]], list]:
    """Hooks keeping every input of the listed layers' o_proj and down_proj, one tensor per call."""
    seen: dict[str, list[torch.Tensor]] = {}
    handles = []
    for index in layers:
        layer = model.model.layers[index]
        for key, module in ((f"{index}.attn", layer.self_attn.o_proj), (f"{index}.mlp", layer.mlp.down_proj)):
            seen[key] = []
            handles.append(
                module.register_forward_hook(lambda _m, inp, _out, key=key: seen[key].append(inp[0].detach()))
            )
    return seen, handles


@torch.no_grad()
def flap_removals(
    model: nn.Module, batches: list[torch.Tensor], ratio: float
) -> tuple[set[Removal], dict[str, torch.Tensor]]:
    """FLAP (WIFV, AL-AM) at ``pruning_ratio``: the removed structures and ``baseline_inp`` per projection."""
    config = model.config
    layers = model.model.layers
    head_dim = config.head_dim
    seen, handles = _output_projection_inputs(model, list(range(len(layers))))
    for ids in batches:
        for j in range(ids.shape[0]):  # the official loop feeds one sample at a time
            model(ids[j : j + 1])
    for handle in handles:
        handle.remove()
    baselines, attn_metrics, mlp_metrics = {}, [], []
    for index, layer in enumerate(layers):
        for key, weight in (
            (f"{index}.attn", layer.self_attn.o_proj.weight),
            (f"{index}.mlp", layer.mlp.down_proj.weight),
        ):
            # BiasGPT.add_batch, batch size 1: inp is (dim, seqlen)
            nsamples, baseline, fluc = 0, torch.zeros(weight.shape[1], dtype=weight.dtype), None
            for x in seen[key]:
                inp = x.reshape(-1, x.shape[-1]).t()
                old = baseline  # the same tensor: the official update below is in place
                baseline *= nsamples / (nsamples + 1)
                baseline += torch.mean(inp, dim=1) / (nsamples + 1)
                if nsamples == 0:
                    fluc = 0
                else:
                    fluc *= (nsamples - 1) / (nsamples + 1 - 1)
                    fluc += torch.sum((inp - baseline.unsqueeze(1)) * (inp - old.unsqueeze(1)), dim=1) / (
                        nsamples + 1
                    )
                nsamples += 1  # noqa: SIM113 (the official counter, kept as written)
            baselines[key] = baseline
            metric = fluc * torch.sum(weight.pow(2), dim=0)  # WIFV
            (attn_metrics if key.endswith("attn") else mlp_metrics).append(
                metric**2 if key.endswith("attn") else metric
            )
    standardise = lambda x: (x - torch.mean(x, axis=1, keepdim=True)) / torch.std(x, axis=1, keepdim=True)  # noqa: E731
    attn_metric = standardise(torch.stack(attn_metrics)).reshape(len(layers), -1, head_dim).mean(dim=2)
    mlp_metric = standardise(torch.stack(mlp_metrics))
    prune_metric = torch.cat([attn_metric.view(-1), mlp_metric.view(-1)])
    sorted_prune, indices = torch.sort(prune_metric, descending=True)
    compression_weight = torch.ones_like(indices, dtype=torch.float64)
    compression_weight[indices < attn_metric.numel()] = 4 * head_dim / 3  # 512/3 for LLaMA's head_dim 128
    target = torch.sum(compression_weight) * (1 - ratio)
    threshold = sorted_prune[torch.argmin(torch.abs(torch.cumsum(compression_weight, 0) - target))]
    attn_mask, mlp_mask = attn_metric > threshold, mlp_metric > threshold  # True: kept
    removed = {(int(i), 0, int(h)) for i, h in (~attn_mask).nonzero()}
    removed |= {(int(i), 1, int(c)) for i, c in (~mlp_mask).nonzero()}
    return removed, baselines


@torch.no_grad()
def wanda_sp_removals(model: nn.Module, batches: list[torch.Tensor], ratio: float) -> set[Removal]:
    """Wanda-sp at ``pruning_ratio``, layer after layer on the already pruned model (masking it in place)."""
    config = model.config
    head_dim, heads = config.head_dim, config.num_attention_heads
    removed: set[Removal] = set()
    for index, layer in enumerate(model.model.layers):
        seen, handles = _output_projection_inputs(model, [index])
        for ids in batches:
            for j in range(ids.shape[0]):
                model(ids[j : j + 1])
        for handle in handles:
            handle.remove()
        masks = {}
        for key, linear in ((f"{index}.attn", layer.self_attn.o_proj), (f"{index}.mlp", layer.mlp.down_proj)):
            nsamples, scaler_row = 0, torch.zeros(linear.weight.shape[1], dtype=linear.weight.dtype)
            for x in seen[key]:  # WrappedGPT.add_batch, batch size 1
                inp = x.reshape(-1, x.shape[-1]).t()
                scaler_row *= nsamples / (nsamples + 1)
                nsamples += 1  # noqa: SIM113 (the official counter, kept as written)
                scaler_row += torch.norm(inp, p=2, dim=1) ** 2 / nsamples
            metric = torch.abs(linear.weight) * torch.sqrt(scaler_row.reshape((1, -1)))
            if key.endswith("attn"):
                metric = metric.mean(axis=0).reshape(-1, head_dim).sum(dim=1)
                thresh = torch.sort(metric)[0][int(ratio * heads)]
            else:
                metric = metric.mean(axis=0)
                thresh = torch.sort(metric)[0][int(metric.numel() * ratio)]
            masks[key] = metric >= thresh  # True: kept
        head_mask, channel_mask = masks[f"{index}.attn"], masks[f"{index}.mlp"]
        removed |= {(index, 0, int(h)) for h in (~head_mask).nonzero().flatten()}
        removed |= {(index, 1, int(c)) for c in (~channel_mask).nonzero().flatten()}
        rows = (~head_mask).repeat_interleave(head_dim)
        attn, mlp = layer.self_attn, layer.mlp
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            linear.weight[rows] = 0
        attn.o_proj.weight[:, rows] = 0
        mlp.gate_proj.weight[~channel_mask] = 0
        mlp.up_proj.weight[~channel_mask] = 0
        mlp.down_proj.weight[:, ~channel_mask] = 0
    return removed
