"""Per-feature statistics of what flows into each output projection, recorded by forward hooks.

Wanda-sp and FLAP score a head or channel by the inputs of the output projection it feeds; bias
compensation needs their mean. Padding tokens are excluded through the attention mask set before each batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from core.engine.objectives import Batch, weighted_sequence_loss


def output_projections(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """Every o_proj and down_proj, keyed "<layer>.attn" / "<layer>.mlp": where heads and channels end."""
    for index, layer in enumerate(model.model.layers):
        yield f"{index}.attn", layer.self_attn.o_proj
        yield f"{index}.mlp", layer.mlp.down_proj


class ActivationStatistics:
    """Running per-feature sum and sum of squares of the inputs of o_proj and down_proj."""

    def __init__(self, model: nn.Module) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.squares: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self.loss = float("nan")
        self._handles = []
        for key, module in output_projections(model):
            self._handles.append(module.register_forward_pre_hook(self._hook(key)))

    def _hook(self, key: str) -> Callable:
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()
            if self.mask is not None:
                x = x[self.mask.bool()]
            x = x.flatten(0, -2)  # (tokens, features); also when a layer has no features left
            self.sums[key] = self.sums.get(key, 0) + x.sum(0)
            self.squares[key] = self.squares.get(key, 0) + (x * x).sum(0)
            self.counts[key] = self.counts.get(key, 0) + x.shape[0]

        return record

    @torch.no_grad()
    def collect(self, model: nn.Module, batches: list[Batch]) -> ActivationStatistics:
        """One forward pass per batch feeds the statistics and, from the same logits, ``self.loss``.

        The loss equals ``calibration_loss`` on the same batches; reading it here saves a second pass.
        """
        device = next(model.parameters()).device
        self.loss = 0.0
        for batch in batches:
            batch = batch.to(device)
            self.mask = batch.attention_mask
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
            self.loss += float(weighted_sequence_loss(logits, batch.labels, batch.weights))
        return self.close()

    def close(self) -> ActivationStatistics:
        """Stop recording: remove the hooks (statistics stay readable)."""
        self.mask = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    def mean(self, key: str) -> torch.Tensor:
        return self.sums[key] / max(self.counts[key], 1)

    def means(self) -> dict[str, torch.Tensor]:
        return {key: self.mean(key) for key in self.sums}

    def norm(self, key: str) -> torch.Tensor:
        return self.squares[key].sqrt()

    def variance(self, key: str) -> torch.Tensor:
        mean = self.mean(key)
        return (self.squares[key] / max(self.counts[key], 1) - mean * mean).clamp(min=0)
