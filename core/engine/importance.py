"""Per-structure scores from the working model: GISP's first-order Taylor score and the baselines' metrics.

Each scorer returns, per layer, one score per alive query head and per alive MLP channel (in the working
model's current order). Lower means less important; the pruning loop ranks them globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn

from core.engine.objectives import Batch, batch_loss, weighted_sequence_loss
from core.engine.partial_forward import forward_until
from core.engine.reconstruct import DEFAULT_DAMPING, Gram
from core.engine.structures import Geometry, PruningState
from core.pruning_spec import Method, Normalization


@dataclass
class LayerScores:
    heads: torch.Tensor  # (alive heads,)
    channels: torch.Tensor  # (alive channels,)


PRUNABLE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def output_projections(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    """Every o_proj and down_proj, keyed "<layer>.attn" / "<layer>.mlp": where heads and channels end."""
    for index, layer in enumerate(model.model.layers):
        yield f"{index}.attn", layer.self_attn.o_proj
        yield f"{index}.mlp", layer.mlp.down_proj


def prepare_for_gradients(model: nn.Module) -> None:
    """Gradients only where scores need them: the decoder's linear weights, never embeddings or LM head."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.endswith(tuple(f"{p}.weight" for p in PRUNABLE)) and ".layers." in name)


def prepare_for_gate_gradients(model: nn.Module) -> None:
    """Gate scores (``GateFisher``) read only the gradients that reach the output projections' inputs.

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


def _attention_parts(layer: nn.Module) -> tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear, torch.Tensor]:
    attention = layer.self_attn
    return attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj, attention.kv_index


def _head_sums(
    layer: nn.Module, head_dim: int, element: Callable[[nn.Linear], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per query head: (own q+o sum, its KV head's k+v sum, number of alive query heads sharing that KV head)."""
    q, k, v, o, kv_index = _attention_parts(layer)
    heads = q.out_features // head_dim
    if heads == 0:
        empty = torch.zeros(0, device=q.weight.device)
        return empty, empty, empty
    own = element(q).view(heads, -1).sum(1) + element(o).view(o.out_features, heads, head_dim).sum((0, 2))
    kv_heads = k.out_features // head_dim
    kv = element(k).view(kv_heads, -1).sum(1) + element(v).view(kv_heads, -1).sum(1)
    readers = torch.bincount(kv_index, minlength=kv_heads).to(own.dtype)
    return own, kv[kv_index], readers[kv_index]


def _channel_sums(layer: nn.Module, element: Callable[[nn.Linear], torch.Tensor]) -> torch.Tensor:
    mlp = layer.mlp
    return element(mlp.gate_proj).sum(1) + element(mlp.up_proj).sum(1) + element(mlp.down_proj).sum(0)


def _normalised(
    own: torch.Tensor,
    kv: torch.Tensor,
    readers: torch.Tensor,
    channels: torch.Tensor,
    g: Geometry,
    normalization: Normalization,
) -> LayerScores:
    """Block-wise normalisation so heads and channels compete in one ranking.

    A query head's block is its q rows and o columns plus its share of the KV head it reads.
    """
    head_total = own + kv / readers.clamp(min=1)
    if normalization is Normalization.reference:
        return LayerScores(
            head_total / (4 * g.head_dim * g.hidden_size), channels / (3 * g.intermediate_size)
        )
    block = 2 * g.head_dim * g.hidden_size + 2 * g.head_dim * g.hidden_size / readers.clamp(min=1)
    return LayerScores(head_total / block, channels / (3 * g.hidden_size))


@torch.no_grad()
def taylor_scores(
    model: nn.Module,
    g: Geometry,
    normalization: Normalization,
    input_means: dict[str, torch.Tensor] | None = None,
) -> list[LayerScores]:
    """GISP: Σ |W ⊙ ḡ| over each structure's weights, block-normalised (ḡ left in ``.grad``).

    With ``input_means`` (bias compensation: a removed feature's mean input stays in the output bias) the
    output projections' gradients are centred, ḡ - ḡ_bias ⊗ ā: removing a feature then changes the output
    only by its deviation from the mean, so a feature that is large but nearly constant is not kept for it.
    The output biases must hold their gradients (``accumulate_gradients`` with ``output_bias_gradients``).
    """
    centred: dict[int, torch.Tensor] = {}
    if input_means is not None:
        for key, linear in output_projections(model):
            bias_grad = linear.bias.grad.float()
            mean = input_means[key].to(bias_grad.device)
            centred[id(linear)] = linear.weight.grad.float() - bias_grad[:, None] * mean[None, :]

    def element(linear: nn.Linear) -> torch.Tensor:
        gradient = centred.get(id(linear))
        if gradient is None:
            gradient = linear.weight.grad.float()
        return (linear.weight.float() * gradient).abs()

    return _scores_from(model, g, normalization, element)


@torch.no_grad()
def magnitude_scores(model: nn.Module, g: Geometry, normalization: Normalization) -> list[LayerScores]:
    return _scores_from(model, g, normalization, lambda linear: linear.weight.abs().float())


def _scores_from(
    model: nn.Module, g: Geometry, normalization: Normalization, element: Callable[[nn.Linear], torch.Tensor]
) -> list[LayerScores]:
    scores = []
    for layer in model.model.layers:
        own, kv, readers = _head_sums(layer, g.head_dim, element)
        scores.append(_normalised(own, kv, readers, _channel_sums(layer, element), g, normalization))
    return scores


def random_scores(state: PruningState, seed: int) -> list[LayerScores]:
    generator = torch.Generator().manual_seed(seed)
    return [
        LayerScores(
            torch.rand(len(s.heads), generator=generator), torch.rand(len(s.channels), generator=generator)
        )
        for s in state.layers
    ]


class ActivationStatistics:
    """Running per-feature mean and second moment of the inputs of o_proj and down_proj.

    Wanda-sp and FLAP score a head or channel by what flows into the output projection it feeds.
    Padding tokens are excluded through the attention mask the caller sets before each batch.
    """

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

    def norm(self, key: str) -> torch.Tensor:
        return self.squares[key].sqrt()

    def variance(self, key: str) -> torch.Tensor:
        mean = self.mean(key)
        return (self.squares[key] / max(self.counts[key], 1) - mean * mean).clamp(min=0)


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
                _normalised(
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


@torch.no_grad()
def wanda_sp_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """Wanda-sp: Σ |W_out[:, j]| · ‖X_j‖ over the output projection's input features of each structure."""
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        head_features = o.weight.abs().float().sum(0) * stats.norm(f"{index}.attn")
        channel = down.weight.abs().float().sum(0) * stats.norm(f"{index}.mlp")
        scores.append(LayerScores(head_features.view(-1, g.head_dim).sum(1), channel))
    return scores


@torch.no_grad()
def flap_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """FLAP: fluctuation Var(X_j)·‖W[:, j]‖², standardised per layer and kind for one adaptive ranking."""
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        heads = (stats.variance(f"{index}.attn") * o.weight.float().pow(2).sum(0)).view(-1, g.head_dim).sum(1)
        channels = stats.variance(f"{index}.mlp") * down.weight.float().pow(2).sum(0)
        scores.append(LayerScores(heads, channels))
    return _standardised(scores)


def _standardised(scores: list[LayerScores]) -> list[LayerScores]:
    def standardise(values: torch.Tensor) -> torch.Tensor:
        if values.numel() < 2:
            return values - values.mean() if values.numel() else values
        return (values - values.mean()) / values.std().clamp(min=1e-12)

    return [LayerScores(standardise(s.heads), standardise(s.channels)) for s in scores]


def uniform_quantiles(scores: list[LayerScores], eligible: list[int]) -> list[LayerScores]:
    """Replace scores by their rank fraction within each (layer, kind).

    Ranked globally, these remove the same fraction of heads and of channels from every eligible layer:
    Wanda-sp's uniform per-layer sparsity, expressed in the shared loop.
    """

    def quantile(values: torch.Tensor) -> torch.Tensor:
        n = values.numel()
        if n == 0:
            return values
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[torch.argsort(values, stable=True)] = torch.arange(n, dtype=torch.float32)
        return (ranks + 1) / n

    return [
        LayerScores(quantile(s.heads), quantile(s.channels)) if i in eligible else s
        for i, s in enumerate(scores)
    ]


NEEDS_GRADIENTS = frozenset({Method.gisp, Method.gisp_oneshot})
NEEDS_ACTIVATIONS = frozenset({Method.wanda_sp, Method.flap})
