"""Least-squares reconstruction of the output projections of a pruned model, layer by layer.

Removing heads or channels leaves each o_proj / down_proj summing fewer features. Bias compensation puts the
removed features' *mean* back; this goes one step further and refits the kept columns and the bias so the
layer's output matches the dense layer's output on calibration tokens, which also folds in what the removed
features shared with the kept ones (their covariance). It is a closed-form solve per projection, no gradient
steps: the structures GISP chose stay exactly as chosen, only the weights that read them move.

Layers are refitted in order on the *pruned* model's own hidden states, so each layer also corrects what the
layers before it could not. The solve is damped towards the original weights, which keeps it well posed
when few tokens see many features.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from core.engine.modeling.modeling_gisp import GispForCausalLM
from core.engine.objectives import Batch
from core.engine.partial_forward import forward_until
from core.engine.structures import Geometry, PruningState


@dataclass
class _LayerInput:
    hidden: torch.Tensor
    position_embeddings: tuple[torch.Tensor, torch.Tensor]
    attention_mask: torch.Tensor | None
    tokens: torch.Tensor  # bool (batch, seq): the real tokens, padding excluded from every sum


DEFAULT_DAMPING = 0.01


class Gram:
    """Σ a aᵀ over real tokens, a = [x, 1] (or x without ``constant``): all a least-squares solve needs, in float64.

    ``tokens`` (bool, batch × seq) marks the real tokens of the batch being added; padding never counts.
    """

    def __init__(self, constant: bool = True) -> None:
        self.constant = constant
        self.matrix: torch.Tensor | None = None
        self.tokens: torch.Tensor | None = None

    def add(self, x: torch.Tensor) -> None:
        a = x[self.tokens].double() if self.tokens is not None else x.flatten(0, -2).double()
        if self.constant:
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype, device=a.device)], dim=1)
        update = a.T @ a
        self.matrix = update if self.matrix is None else self.matrix + update

    @contextmanager
    def watching(self, linear: nn.Linear) -> Iterator[Gram]:
        handle = linear.register_forward_pre_hook(lambda _m, inputs: self.add(inputs[0].detach()))
        try:
            yield self
        finally:
            handle.remove()


@torch.no_grad()
def reconstruct_outputs(
    model: GispForCausalLM,
    base: GispForCausalLM,
    geometry: Geometry,
    state: PruningState,
    batches: list[Batch],
    *,
    damping: float = DEFAULT_DAMPING,
    fit_bias: bool = True,
) -> None:
    """Refit every o_proj / down_proj of ``model`` (sliced to ``state``) against ``base``, the dense model.

    ``damping`` is the ridge weight towards the original kept weights, relative to the mean feature energy.
    ``fit_bias=False`` (stock families without output biases) fits the weights alone. Layers that lost
    nothing keep their weights. New tensors are assigned, so ``base``'s stay intact even where the sliced
    model shares them.
    """
    if fit_bias:
        _give_every_projection_a_bias(model)
    inputs = _first_layer_inputs(model, batches)
    g = geometry
    for layer, base_layer, alive in zip(model.model.layers, base.model.layers, state.layers):
        kept_features = [h * g.head_dim + d for h in alive.heads for d in range(g.head_dim)]
        if len(alive.heads) < g.num_heads:
            gram = Gram()
            with gram.watching(base_layer.self_attn.o_proj):
                for item in inputs:
                    gram.tokens = item.tokens
                    normed = base_layer.input_layernorm(item.hidden)
                    base_layer.self_attn(normed, item.position_embeddings, attention_mask=item.attention_mask)
            _refit(
                layer.self_attn.o_proj,
                base_layer.self_attn.o_proj,
                gram.matrix,
                kept_features,
                damping,
                fit_bias,
            )
        if len(alive.channels) < g.intermediate_size:
            gram = Gram()
            with gram.watching(base_layer.mlp.down_proj):
                for item in inputs:
                    gram.tokens = item.tokens
                    attended = layer.self_attn(
                        layer.input_layernorm(item.hidden),
                        item.position_embeddings,
                        attention_mask=item.attention_mask,
                    )
                    base_layer.mlp(layer.post_attention_layernorm(item.hidden + attended))
            _refit(
                layer.mlp.down_proj,
                base_layer.mlp.down_proj,
                gram.matrix,
                list(alive.channels),
                damping,
                fit_bias,
            )
        for item in inputs:
            item.hidden = layer(item.hidden, item.position_embeddings, attention_mask=item.attention_mask)


def _refit(
    linear: nn.Linear, base: nn.Linear, gram: torch.Tensor, kept: list[int], damping: float, fit_bias: bool
) -> None:
    """Solve min ‖[W', b'] z − [W, b] a‖² + λ‖W' − W_kept‖², z the kept part of a = [x, 1] (without the 1
    when there is no bias to fit)."""
    features = base.weight.shape[1]
    columns = torch.tensor([*kept, features] if fit_bias else kept, dtype=torch.long, device=gram.device)
    dense = base.weight.detach().double()
    bias = base.bias.detach().double() if base.bias is not None else dense.new_zeros(dense.shape[0])
    target = torch.cat([dense, bias[:, None]], dim=1)  # (out, features + 1)
    lhs = gram[columns][:, columns].clone()
    rhs = target @ gram[:, columns]  # (out, kept + 1)
    if kept:
        diagonal = torch.arange(len(kept), device=gram.device)
        ridge = damping * float(lhs[diagonal, diagonal].mean())
        lhs[diagonal, diagonal] += ridge
        rhs[:, : len(kept)] += ridge * dense[:, kept]
    solution = torch.linalg.solve(lhs, rhs.T).T if len(columns) else rhs
    dtype = linear.weight.dtype
    linear.weight = nn.Parameter(solution[:, : len(kept)].to(dtype).contiguous(), requires_grad=False)
    if fit_bias:
        linear.bias = nn.Parameter(solution[:, -1].to(dtype).contiguous(), requires_grad=False)


def _give_every_projection_a_bias(model: GispForCausalLM) -> None:
    """The config switches output biases on for all layers at once, so layers left whole get zero biases."""
    for layer in model.model.layers:
        for linear in (layer.self_attn.o_proj, layer.mlp.down_proj):
            if linear.bias is None:
                zeros = torch.zeros(
                    linear.out_features, dtype=linear.weight.dtype, device=linear.weight.device
                )
                linear.bias = nn.Parameter(zeros, requires_grad=False)
    model.config.o_proj_bias = True
    model.config.down_proj_bias = True


def _first_layer_inputs(model: GispForCausalLM, batches: list[Batch]) -> list[_LayerInput]:
    captured: list[_LayerInput] = []
    tokens: torch.Tensor | None = None

    def set_tokens(batch: Batch) -> None:
        nonlocal tokens
        tokens = batch.attention_mask.bool()

    def capture(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        assert tokens is not None
        captured.append(
            _LayerInput(args[0].detach(), kwargs["position_embeddings"], kwargs.get("attention_mask"), tokens)
        )

    first = model.model.layers[0]
    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        forward_until(model, batches, first, set_tokens)
    finally:
        handle.remove()
    return captured
