"""The gradient pass the gradient methods share: ḡ over the step's batches, and what it may record besides."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.engine.objectives import Batch, batch_loss
from core.engine.statistics import ActivationStatistics

PRUNABLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def prepare_for_gradients(model: nn.Module) -> None:
    """Gradients only where scores need them: the decoder's linear weights, never embeddings or LM head."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith(tuple(f"{p}.weight" for p in PRUNABLE)) and ".layers." in name)


def prepare_for_gate_gradients(model: nn.Module) -> None:
    """Gate scores read only the gradients that reach the output projections' inputs.

    No weight then needs a gradient, so backward skips every weight-gradient product (about half its work);
    the embeddings' output is made to require a gradient instead, so the loss still has a graph to run back
    through.
    """
    model.requires_grad_(False)
    model.model.embed_tokens.register_forward_hook(
        lambda _module, _inputs, output: output.requires_grad_(True)
    )


def accumulate_gradients(
    model: nn.Module, batches: list[Batch], statistics: ActivationStatistics | None = None
) -> float:
    """Leaves ḡ, the gradient of the objective over all batches, in each weight's ``.grad``; returns the loss.

    ``statistics`` (hooks already on ``model``) also records the output projections' inputs in the same
    forward passes, which bias compensation needs, at no extra pass.
    """
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    total = 0.0
    for batch in batches:
        batch = batch.to(device)
        if statistics is not None:
            statistics.mask = batch.attention_mask
        loss = batch_loss(model, batch)
        loss.backward()
        total += float(loss.detach())
    if statistics is not None:
        statistics.close()
    return total


@torch.no_grad()
def calibration_loss(model: nn.Module, batches: list[Batch]) -> float:
    device = next(model.parameters()).device
    return sum(float(batch_loss(model, batch.to(device))) for batch in batches)


@contextmanager
def output_bias_gradients(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let o_proj / down_proj biases (present under compensation) collect ḡ_bias for the centred scores."""
    biases = []
    if enabled:
        for layer in model.model.layers:
            biases += [layer.self_attn.o_proj.bias, layer.mlp.down_proj.bias]
    for bias in biases:
        bias.requires_grad_(True)
    try:
        yield
    finally:
        for bias in biases:
            bias.requires_grad_(False)
            bias.grad = None
