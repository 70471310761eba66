"""The activation methods: FLAP and Wanda-sp as their official code computes them, and the engine's variants.

Official code: CASIA-IVA-Lab/FLAP, lib/prune.py (``prune_flap``, ``prune_wanda_sp``, ``compress``) and
lib/layerwrapper.py (``BiasGPT``, ``WrappedGPT``). ``flap`` and ``wanda-sp`` follow it; ``flap-headsum`` and
``wanda-sp-dense`` are the engine's earlier readings, kept under their own names so runs made with them stay
reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.engine.compensation import Means, means_of_every_feature
from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.gradients import calibration_loss
from core.engine.objectives import Batch, weighted_sequence_loss
from core.engine.partial_forward import forward_until
from core.engine.statistics import ActivationStatistics, output_projections
from core.engine.structures import Geometry


class FlapScorer(Scorer):
    """FLAP (WIFV metric, AL-AM structure): fluctuation × ‖W[:, j]‖², the attention's squared, each layer's
    features standardised, heads the mean of their features, one global ranking, bias compensation."""

    def score(self, step: StepInput) -> Scored:
        stats = FluctuationStatistics(step.model).collect(step.model, step.batches)
        scores = flap_scores(step.model, step.geometry, stats)
        return Scored(scores, stats.loss, compensation=stats.compensation_means())


class WandaSpScorer(Scorer):
    """Wanda-sp: |W| · ‖X_j‖ averaged over output rows, the same fraction of heads and of channels removed
    from every layer, each layer measured on the output of the layers already pruned before it."""

    def score(self, step: StepInput) -> Scored:
        loss = calibration_loss(step.model, step.batches)
        return Scored(sequential_wanda_sp(step), loss)


class FlapHeadsumScorer(Scorer):
    """The engine's earlier FLAP reading: Var(X_j)·‖W[:, j]‖² summed per head, heads and channels each
    standardised per layer, bias compensation. Differs from FLAP in the square, the order of standardising
    and averaging, and (by default) the protected layers."""

    def score(self, step: StepInput) -> Scored:
        stats = ActivationStatistics(step.model).collect(step.model, step.batches)
        scores = flap_headsum_scores(step.model, step.geometry, stats)
        return Scored(scores, stats.loss, compensation=means_of_every_feature(stats))


class WandaSpDenseScorer(Scorer):
    """The engine's earlier Wanda-sp reading: all statistics from one pass on the dense model, scores turned
    into rank fractions per layer and kind, then one global ranking by parameters."""

    def score(self, step: StepInput) -> Scored:
        stats = ActivationStatistics(step.model).collect(step.model, step.batches)
        scores = uniform_quantiles(wanda_sp_scores(step.model, step.geometry, stats), step.eligible)
        return Scored(scores, stats.loss)


class FluctuationStatistics:
    """FLAP's ``BiasGPT`` statistics of the inputs of o_proj and down_proj, updated one sequence at a time.

    Per sequence s of T tokens (the official code feeds one sequence per call), with n sequences seen:
    mean ← mean·n/(n+1) + mean_t(x)/(n+1); fluctuation ← fluctuation·(n-1)/n + Σ_t (x - mean)²/(n+1),
    nothing for the first sequence. The official update multiplies the running mean in place before using
    its "old" value, so both factors of its product use the updated mean: reproduced here as it runs.
    """

    def __init__(self, model: nn.Module) -> None:
        self.means: dict[str, torch.Tensor] = {}
        self.fluctuations: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self.mask: torch.Tensor | None = None
        self.loss = float("nan")
        self._handles = [
            module.register_forward_pre_hook(self._hook(key)) for key, module in output_projections(model)
        ]

    def _hook(self, key: str) -> Callable:
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            for row in range(x.shape[0]):
                tokens = x[row] if self.mask is None else x[row][self.mask[row].bool()]
                self._update(key, tokens.to(torch.float64 if x.dtype == torch.float64 else torch.float32))

        return record

    def _update(self, key: str, x: torch.Tensor) -> None:
        n = self.counts.get(key, 0)
        mean = self.means.get(key, torch.zeros(x.shape[-1], dtype=x.dtype, device=x.device))
        mean = mean * (n / (n + 1)) + x.mean(0) / (n + 1)
        if n == 0:
            fluctuation = torch.zeros_like(mean)
        else:
            fluctuation = self.fluctuations[key] * ((n - 1) / n) + ((x - mean) ** 2).sum(0) / (n + 1)
        self.means[key], self.fluctuations[key], self.counts[key] = mean, fluctuation, n + 1

    @torch.no_grad()
    def collect(self, model: nn.Module, batches: list[Batch]) -> FluctuationStatistics:
        device = next(model.parameters()).device
        self.loss = 0.0
        for batch in batches:
            batch = batch.to(device)
            self.mask = batch.attention_mask
            logits = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
            self.loss += float(weighted_sequence_loss(logits, batch.labels, batch.weights))
        self.mask = None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        return self

    def compensation_means(self) -> Means:
        """FLAP's ``baseline_inp``, as a trajectory stores compensation means."""
        return {key: [round(v, 7) for v in mean.float().tolist()] for key, mean in self.means.items()}


def _standardise(values: torch.Tensor) -> torch.Tensor:
    """FLAP's ``standarlization``: (x - mean) / std (unbiased) over one layer's features."""
    if values.numel() < 2:
        return values - values.mean() if values.numel() else values
    return (values - values.mean()) / values.std()


@torch.no_grad()
def flap_scores(model: nn.Module, g: Geometry, stats: FluctuationStatistics) -> list[LayerScores]:
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        attn = stats.fluctuations[f"{index}.attn"]
        attn = (attn * o.weight.to(attn.dtype).pow(2).sum(0)).pow(2)
        mlp = stats.fluctuations[f"{index}.mlp"]
        mlp = mlp * down.weight.to(mlp.dtype).pow(2).sum(0)
        heads = _standardise(attn).view(-1, g.head_dim).mean(1)
        scores.append(LayerScores(heads, _standardise(mlp)))
    return scores


@torch.no_grad()
def sequential_wanda_sp(step: StepInput) -> list[LayerScores]:
    """Wanda-sp's removals at ``step.target``, layer after layer, as scores the global ranking takes first.

    The official code prunes a ratio r of the heads and of the channels of every layer; r here is the
    target over the share of the decoder the eligible layers hold, so the removals reach it. As in the
    official loop, each layer runs twice on the hidden states the pruned layers before it produced: once to
    measure its o_proj and down_proj inputs, once pruned (its removals applied by zeroing their o_proj /
    down_proj columns, restored afterwards) to feed the next layer. Planned removals score in (-2, -1],
    everything else its rank fraction in (0, 1]: should whole structures per layer fall short of the
    target, the lowest-ranked rest make up the difference.
    """
    model, g, view = step.model, step.geometry, step.view
    ratio = uniform_ratio(g, step.eligible, step.target)
    layers = model.model.layers
    states, masks = _first_layer_inputs(model, step.batches)
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    scores: list[LayerScores] = []
    try:
        for index, layer in enumerate(layers):
            attn_in, mlp_in = _input_norms(layer, states, masks)
            o, down = layer.self_attn.o_proj, layer.mlp.down_proj
            heads = (o.weight.abs().float() * attn_in[None, :]).mean(0).view(-1, g.head_dim).sum(1)
            channels = (down.weight.abs().float() * mlp_in[None, :]).mean(0)
            alive = step.state.layers[index]
            present_heads, present_channels = view.present(alive, g)
            live_heads = _alive_positions(present_heads, alive.heads)
            live_channels = _alive_positions(present_channels, alive.channels)
            layer_scores = LayerScores(_quantile(heads, live_heads), _quantile(channels, live_channels))
            if index in step.eligible:
                removed_heads = g.num_heads - len(alive.heads)
                removed_channels = g.intermediate_size - len(alive.channels)
                head_cut = _lowest(heads, live_heads, int(ratio * g.num_heads + 1e-9) - removed_heads)
                channel_cut = _lowest(
                    channels, live_channels, int(ratio * g.intermediate_size + 1e-9) - removed_channels
                )
                layer_scores.heads[head_cut] -= 2.0
                layer_scores.channels[channel_cut] -= 2.0
                features = (head_cut[:, None] * g.head_dim + torch.arange(g.head_dim)).flatten()
                for linear, columns in ((o, features), (down, channel_cut)):
                    if columns.numel():
                        saved.append((linear.weight, linear.weight.data.clone()))
                        linear.weight.data[:, columns.to(linear.weight.device)] = 0
            scores.append(layer_scores)
            if index + 1 < len(layers):
                states = [(layer(hidden, **kwargs), kwargs) for hidden, kwargs in states]
    finally:
        for parameter, original in reversed(saved):
            parameter.data.copy_(original)
    return scores


def uniform_ratio(g: Geometry, eligible: list[int], target: float) -> float:
    """The fraction of heads and channels per eligible layer whose removal reaches ``target`` sparsity."""
    per_layer = g.num_heads * g.query_head_params + g.num_kv_heads * g.kv_head_params
    per_layer += g.intermediate_size * g.channel_params
    return min(1.0, target * g.dense_decoder_params / (len(eligible) * per_layer)) if eligible else 0.0


State = tuple[torch.Tensor, dict[str, object]]


def _first_layer_inputs(model: nn.Module, batches: list[Batch]) -> tuple[list[State], list[torch.Tensor]]:
    """What the first decoder layer receives for every batch (hidden states and keyword arguments), and
    each batch's attention mask, from passes that stop there."""
    states: list[State] = []
    masks: list[torch.Tensor] = []

    def capture(_module: nn.Module, args: tuple, kwargs: dict[str, object]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        states.append((hidden.detach(), {k: v for k, v in kwargs.items() if k != "hidden_states"}))

    first = model.model.layers[0]
    handle = first.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        forward_until(model, batches, first, lambda batch: masks.append(batch.attention_mask))
    finally:
        handle.remove()
    return states, masks


def _input_norms(
    layer: nn.Module, states: list[State], masks: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """‖X_j‖ of the layer's o_proj and down_proj inputs (padding excluded) over one run of every batch."""
    squares: dict[str, torch.Tensor] = {}
    current: dict[str, torch.Tensor] = {}

    def hook(key: str) -> Callable:
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()[current["mask"].bool()]
            squares[key] = squares.get(key, 0) + (x * x).sum(0)

        return record

    handles = [
        layer.self_attn.o_proj.register_forward_pre_hook(hook("attn")),
        layer.mlp.down_proj.register_forward_pre_hook(hook("mlp")),
    ]
    try:
        for (hidden, kwargs), mask in zip(states, masks):
            current["mask"] = mask.to(hidden.device)
            layer(hidden, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
    return squares["attn"].sqrt(), squares["mlp"].sqrt()


def _alive_positions(present: object, alive: list[int]) -> torch.Tensor:
    """Positions, in the working model's order, of the structures still alive (a masked model shows all)."""
    live = set(alive)
    return torch.tensor([p for p, index in enumerate(present) if index in live], dtype=torch.long)  # type: ignore[call-overload]


def _lowest(values: torch.Tensor, positions: torch.Tensor, count: int) -> torch.Tensor:
    if count <= 0 or positions.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(values[positions].cpu(), stable=True)
    return positions[order[:count]]


def _quantile(values: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rank fractions in (0, 1] among ``positions``; other positions (dead structures) score 0."""
    out = torch.zeros(values.numel(), dtype=torch.float32)
    n = positions.numel()
    if n:
        ranks = torch.empty(n, dtype=torch.float32)
        ranks[torch.argsort(values[positions].cpu(), stable=True)] = torch.arange(n, dtype=torch.float32)
        out[positions] = (ranks + 1) / n
    return out


@torch.no_grad()
def wanda_sp_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """Σ |W_out[:, j]| · ‖X_j‖ over the output projection's input features of each structure."""
    scores = []
    for index, layer in enumerate(model.model.layers):
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        head_features = o.weight.abs().float().sum(0) * stats.norm(f"{index}.attn")
        channel = down.weight.abs().float().sum(0) * stats.norm(f"{index}.mlp")
        scores.append(LayerScores(head_features.view(-1, g.head_dim).sum(1), channel))
    return scores


@torch.no_grad()
def flap_headsum_scores(model: nn.Module, g: Geometry, stats: ActivationStatistics) -> list[LayerScores]:
    """Var(X_j)·‖W[:, j]‖² summed per head, standardised per layer and kind for one adaptive ranking."""
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

    Ranked globally, these remove about the same fraction of heads and of channels from every eligible
    layer (``wanda-sp-dense``'s approximation of Wanda-sp's uniform per-layer sparsity).
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
