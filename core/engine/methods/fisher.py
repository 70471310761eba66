"""Gate scores: the empirical Fisher of a gate on every head and channel, and its refit-aware variant."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import ExitStack

import torch
from torch import nn

from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.blocks import normalised
from core.engine.methods.gradients import accumulate_gradients, prepare_for_gate_gradients
from core.engine.objectives import Batch
from core.engine.partial_forward import forward_until
from core.engine.reconstruct import DEFAULT_DAMPING, Gram
from core.engine.statistics import ActivationStatistics, output_projections
from core.engine.structures import Geometry
from core.pruning_spec import Normalization


class GateFisherScorer(Scorer):
    """Σ over calibration items of (∂L/∂gate)², from a backward pass that computes no weight gradient."""

    def prepare(self, model: nn.Module) -> None:
        prepare_for_gate_gradients(model)

    def residual_maps(self, step: StepInput) -> dict[str, torch.Tensor] | None:
        return None

    def score(self, step: StepInput) -> Scored:
        model, compensation = step.model, step.compensation
        fisher = GateFisher(model, self.residual_maps(step))  # before the statistics: they read one pass only
        stats = ActivationStatistics(model) if compensation is not None else None
        try:
            loss = accumulate_gradients(model, step.batches, stats)
        finally:
            fisher.close()
        means = None
        if compensation is not None and stats is not None:
            compensation.observe(stats, step.state, step.view)
            means = stats.means()
        groups = item_groups(step.batches)
        scores = fisher.scores(model, step.geometry, step.settings.experimental.normalization, means, groups)
        return Scored(scores, loss)


class RefitFisherScorer(GateFisherScorer):
    """The gate Fisher of what a least-squares refit of the output projection cannot restore."""

    def residual_maps(self, step: StepInput) -> dict[str, torch.Tensor] | None:
        return refit_residual_maps(
            step.model,
            step.batches,
            step.geometry,
            constant=step.compensation is not None,
            dead=step.view.dead_features(step.state),
            skip_layers=step.protected,
        )


def item_groups(batches: list[Batch]) -> torch.Tensor | None:
    """The calibration item of every sequence, in the order the batches ran (None if a batch lacks them)."""
    if any(batch.groups is None for batch in batches):
        return None
    return torch.cat([batch.groups for batch in batches])


class GateFisher:
    """Per-sequence gradients of a gate on every head and channel, read off the backward pass GISP runs anyway.

    For a gate m_j scaling feature j at the input of o_proj / down_proj, ∂L_s/∂m_j = Σ_t x_tj · ∂L_s/∂x_tj over the
    tokens of sequence s; sequences of a batch never interact, so one backward pass gives every sequence's gate
    gradient. A head's gate covers its head_dim features. Σ_s (∂L_s/∂m)² is the empirical Fisher of the gate (s: a
    calibration item; a margin item's choices are one loss and add before squaring), and
    half of it estimates the loss a removal costs at second order (the criterion of Kwon et al., 2022). Under bias
    compensation a removed feature keeps its mean, so x_tj - x̄_j replaces x_tj: both Σ x·g and Σ g are kept per
    sequence and combined once the step's mean is known.

    With ``residual_maps`` (see ``refit_residual_maps``) the gate scales the part of each structure's input that
    the layer's other inputs cannot predict, r = a·Q, instead of x: what is left of a removal once the output
    projection is refitted by least squares. The regression's constant term already takes the mean out.
    """

    def __init__(self, model: nn.Module, residual_maps: dict[str, torch.Tensor] | None = None) -> None:
        self.products: dict[str, list[torch.Tensor]] = {}
        self.gradients: dict[str, list[torch.Tensor]] = {}
        self.residual_maps = residual_maps or {}
        self._handles = []
        for key, module in output_projections(model):
            self.products[key], self.gradients[key] = [], []
            self._handles.append(module.register_forward_pre_hook(self._hook(key)))

    def _hook(self, key: str) -> Callable:
        def watch(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if x.requires_grad:
                x.register_hook(lambda grad, x=x.detach(): self._record(key, x, grad))

        return watch

    @torch.no_grad()
    def _record(self, key: str, x: torch.Tensor, grad: torch.Tensor) -> None:
        grad = grad.float()
        x = x.float()
        residual_map = self.residual_maps.get(key)
        if residual_map is not None:
            features = x.shape[-1]
            residual = x @ residual_map[:features].to(x.device)
            if residual_map.shape[0] > features:  # the regression's constant term
                residual = residual + residual_map[features].to(x.device)
            x = residual
        else:  # Σ g centres the products under compensation; the regression's constant does that for residuals
            self.gradients[key].append(grad.sum(1))
        self.products[key].append((x * grad).sum(1))  # (sequences, features)

    def close(self) -> GateFisher:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    @torch.no_grad()
    def scores(
        self,
        model: nn.Module,
        g: Geometry,
        normalization: Normalization,
        input_means: dict[str, torch.Tensor] | None = None,
        groups: torch.Tensor | None = None,
    ) -> list[LayerScores]:
        """Per structure, Σ over calibration items of the squared gate gradient, normalised.

        ``groups`` names the item of every sequence in the order the batches ran (``Batch.groups``): a
        margin item's choices are one loss, so their gradients add before squaring. Without it, or when every
        sequence is its own item (perplexity, answer), each sequence is squared alone.
        """
        items = _item_index(groups)
        gates = {}
        for key, linear in output_projections(model):
            if not self.products[key]:  # no features left, or no gradient reached them
                gates[key] = torch.zeros(1, linear.in_features, device=linear.weight.device)
                continue
            per_sequence = torch.cat(self.products[key])
            if input_means is not None and key not in self.residual_maps:
                mean = input_means[key].to(per_sequence.device)
                per_sequence = per_sequence - torch.cat(self.gradients[key]) * mean[None, :]
            gates[key] = per_sequence if items is None else _sum_per_item(per_sequence, *items)
        scores = []
        for index, layer in enumerate(model.model.layers):
            attn = gates[f"{index}.attn"]
            heads = attn.view(attn.shape[0], attn.shape[1] // g.head_dim, g.head_dim).sum(-1)
            kv_index = layer.self_attn.kv_index
            readers = torch.bincount(kv_index, minlength=layer.self_attn.k_proj.out_features // g.head_dim)
            fisher_heads = heads.pow(2).sum(0)
            scores.append(
                normalised(
                    fisher_heads,
                    torch.zeros_like(fisher_heads),
                    readers[kv_index].to(fisher_heads.dtype),
                    gates[f"{index}.mlp"].pow(2).sum(0),
                    g,
                    normalization,
                )
            )
        return scores


def _item_index(groups: torch.Tensor | None) -> tuple[int, torch.Tensor] | None:
    """(number of items, each sequence's item index), or None when every sequence is its own item."""
    if groups is None:
        return None
    items, index = torch.unique(groups, return_inverse=True)
    return None if items.numel() == groups.numel() else (items.numel(), index)


def _sum_per_item(per_sequence: torch.Tensor, count: int, index: torch.Tensor) -> torch.Tensor:
    """Rows of the same item added together."""
    if index.numel() != per_sequence.shape[0]:
        raise RuntimeError(f"{per_sequence.shape[0]} recorded sequences but {index.numel()} group labels")
    summed = torch.zeros(count, per_sequence.shape[1], dtype=per_sequence.dtype, device=per_sequence.device)
    return summed.index_add_(0, index.to(per_sequence.device), per_sequence)


@torch.no_grad()
def refit_residual_maps(
    model: nn.Module,
    batches: list[Batch],
    g: Geometry,
    *,
    constant: bool,
    damping: float = DEFAULT_DAMPING,
    dead: dict[str, list[int]] | None = None,
    skip_layers: Iterable[int] = (),
) -> dict[str, torch.Tensor]:
    """Per output projection, Q with a·Q = the residual of each structure's inputs regressed on all others.

    a = [x, 1] (the 1 when ``constant``: biases are refitted too). For a block S of features (a head's
    head_dim, or one channel) and P = (AᵀA + λ)⁻¹, the least-squares residual of A_S on the other columns is
    A·P[:, S]·(P_SS)⁻¹, so one (features+1) × features matrix serves every structure of the layer. λ is the
    refit's own damping. One forward pass over ``batches``, padding excluded, stopped before the LM head.
    ``dead``: features of a masked (not sliced) model that were removed; they predict nothing.
    ``skip_layers`` (protected layers, whose structures are never ranked) get no map.
    """
    skipped = {f"{layer}.{kind}" for layer in skip_layers for kind in ("attn", "mlp")}
    projections = [(key, linear) for key, linear in output_projections(model) if key not in skipped]
    grams = {key: Gram(constant) for key, _ in projections}

    def set_tokens(batch: Batch) -> None:
        for gram in grams.values():
            gram.tokens = batch.attention_mask.bool()

    with ExitStack() as watching:
        for key, linear in projections:
            watching.enter_context(grams[key].watching(linear))
        forward_until(model, batches, model.model.norm, set_tokens)  # the LM head's logits are never read
    maps = {}
    for key, linear in projections:
        if linear.in_features and grams[key].matrix is not None:
            block = g.head_dim if key.endswith(".attn") else 1
            excluded = (dead or {}).get(key, [])
            maps[key] = _residual_map(grams[key].matrix, linear.in_features, block, damping, excluded).float()
    return maps


def _residual_map(
    gram: torch.Tensor, features: int, block: int, damping: float, excluded: list[int] | None = None
) -> torch.Tensor:
    damped = gram.clone()
    diagonal = torch.arange(features, device=gram.device)
    kept = torch.ones(features, dtype=torch.bool, device=gram.device)
    if excluded:
        out = torch.tensor(excluded, dtype=torch.long, device=gram.device)
        kept[out] = False
        damped[out, :] = 0
        damped[:, out] = 0
        damped[out, out] = 1
    energy = float(gram[diagonal[kept], diagonal[kept]].mean()) if bool(kept.any()) else 1.0
    damped[diagonal[kept], diagonal[kept]] += damping * energy + 1e-12
    factor, info = torch.linalg.cholesky_ex(
        damped
    )  # damped: positive definite; Cholesky is the cheap inverse
    inverse = torch.cholesky_inverse(factor) if int(info) == 0 else torch.linalg.inv(damped)
    blocks = features // block
    own = torch.arange(blocks, device=gram.device)
    diagonal_blocks = inverse[:features, :features].reshape(blocks, block, blocks, block)[own, :, own, :]
    columns = inverse[:, :features].reshape(-1, blocks, block)
    return torch.einsum("fnb,nbc->fnc", columns, torch.linalg.inv(diagonal_blocks)).reshape(-1, features)
