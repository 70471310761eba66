"""The one pruning loop every method shares: score → rank globally → remove → record → slice.

Methods differ only in how they score (see ``importance``); schedule, eligibility, sparsity accounting and
the trajectory are the same for all of them, so their results are comparable at equal measured sparsity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from core.data.calibration import CalibrationItem, fingerprint
from core.engine import importance
from core.engine.architectures import geometry_of, to_gisp_model
from core.engine.loading import LoadedModel
from core.engine.materialize import compensate_biases
from core.engine.objectives import CalibrationPool
from core.engine.ranking import ScoreTable, select, survivor_scores
from core.engine.schedule import protected_layers, step_targets
from core.engine.slicing import slice_model
from core.engine.structures import Geometry, PruningState
from core.engine.trajectory import StepRecord, Trajectory
from core.engine.versions import library_versions
from core.errors import UserInputError
from core.pruning_spec import Method, PruneSettings, Score

logger = logging.getLogger(__name__)

StepCallback = Callable[[StepRecord, Trajectory], None]


ONE_SHOT_LOSS_SEQUENCES = 32


def prune(
    loaded: LoadedModel,
    items: Sequence[CalibrationItem],
    settings: PruneSettings,
    *,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Trajectory | None = None,
    physical: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Run ``settings.method`` to every target sparsity and return the trajectory.

    ``resume`` continues a partial trajectory of the same job: the removed structures are sliced away and
    the remaining steps draw the same calibration batches, so the result equals an uninterrupted run.
    ``physical=False`` only masks removed structures (kept for benchmarks that measure what slicing saves).
    """
    base = loaded.model
    geometry = geometry_of(base.config)
    protected = protected_layers(settings, geometry.num_layers)
    eligible = [layer for layer in range(geometry.num_layers) if layer not in protected]
    if not eligible:
        raise UserInputError("every layer is protected; nothing can be pruned", field="protected_layers")
    schedule = step_targets(settings)
    _check_reachable(geometry, eligible, settings.max_sparsity)
    pool = CalibrationPool(items, loaded.tokenizer, settings)
    dense_parameters = sum(p.numel() for p in base.parameters())
    trajectory = resume or Trajectory(
        geometry=geometry,
        settings=settings.model_dump(mode="json"),
        base_model=dict(loaded.identity),
        calibration_fingerprint=fingerprint(items),
        dense_parameters=dense_parameters,
        protected_layers=protected,
        schedule=schedule,
        versions=library_versions(),
    )
    if resume is not None:
        _check_resumable(resume, settings, loaded, items, schedule)

    working = to_gisp_model(base, copy=not physical)
    if settings.method in importance.NEEDS_GRADIENTS and settings.score is Score.taylor:
        importance.prepare_for_gradients(working)
    elif settings.method in importance.NEEDS_GRADIENTS:
        importance.prepare_for_gate_gradients(working)
    else:
        working.requires_grad_(False)
    iterative = settings.method is Method.gisp
    state = PruningState.dense(geometry)
    compensation = _Compensation(base, geometry, trajectory, physical) if settings.bias_compensation else None
    if compensation is not None:
        compensation.apply(working, state)  # biases exist from the start: the scores read their gradients
    one_shot: ScoreTable | None = None
    scoring_seconds = 0.0
    if not iterative:  # scored once, on the dense model, also when resuming
        started = time.perf_counter()
        one_shot, _ = _score(
            working, state, geometry, settings, pool.batches(0), trajectory, physical, compensation
        )
        scoring_seconds = time.perf_counter() - started
        # each step records the loss of the model it starts from, on a bounded share of the pool: one-shot
        # methods score on many sequences, and a full pass per step would cost more than the scoring
        # (weights are normalised over the whole pool, so the share's loss is scaled back to the pool's)
        loss_batches, loss_scale = _loss_share(pool.batches(0), settings.batch_size)
    target = trajectory.state_after_steps(len(trajectory.steps))
    if physical:
        slice_model(working, state, target)
    state = target
    mask = None if physical else _Mask(working, geometry)
    if mask is not None:
        mask.apply(state)
    if compensation is not None:
        compensation.apply(working, state)

    bar = tqdm(total=len(schedule), initial=len(trajectory.steps), disable=not progress, unit="step")
    try:
        for step in range(len(trajectory.steps), len(schedule)):
            if should_stop is not None and should_stop():
                break
            started = time.perf_counter()
            if one_shot is None:
                ranked, loss = _score(
                    working, state, geometry, settings, pool.batches(step), trajectory, physical, compensation
                )
            else:
                ranked = one_shot.alive_in(state)
                loss = importance.calibration_loss(working, loss_batches) * loss_scale
                started -= scoring_seconds if step == 0 else 0.0
            new_state, removed, threshold = select(state, ranked, eligible, schedule[step])
            if physical:
                slice_model(working, state, new_state)
            else:
                mask.apply(new_state)
            if compensation is not None:
                compensation.apply(working, new_state)
            state = new_state
            decoder_now = state.decoder_params()
            record = StepRecord(
                index=step + 1,
                total_steps=len(schedule),
                target_sparsity=schedule[step],
                sparsity=state.sparsity(),
                structure_ratio=state.structure_ratio(),
                threshold=threshold,
                loss=loss,
                seconds=time.perf_counter() - started,
                removed=[s.to_list() for s in removed],
                parameters=dense_parameters - (geometry.dense_decoder_params - decoder_now),
            )
            trajectory.steps.append(record)
            if trajectory.is_complete:
                trajectory.survivor_scores = survivor_scores(state, ranked)
            bar.set_postfix(loss=f"{loss:.4f}", sparsity=f"{record.sparsity:.3f}")
            bar.update(1)
            if on_step is not None:
                on_step(record, trajectory)
    finally:
        bar.close()
        working.zero_grad(set_to_none=True)
        base.zero_grad(set_to_none=True)
    return trajectory


def _loss_share(batches: list, batch_size: int) -> tuple[list, float]:
    """The first ~``ONE_SHOT_LOSS_SEQUENCES`` sequences, and the factor that puts their loss on the pool's scale."""
    share = batches[: max(1, -(-ONE_SHOT_LOSS_SEQUENCES // batch_size))]
    total = sum(float(b.weights.abs().sum()) for b in batches)
    part = sum(float(b.weights.abs().sum()) for b in share)
    return share, (total / part if part > 0 else 1.0)


def _score(
    model: torch.nn.Module,
    state: PruningState,
    geometry: Geometry,
    settings: PruneSettings,
    batches: list,
    trajectory: Trajectory,
    physical: bool,
    compensation: _Compensation | None = None,
) -> tuple[ScoreTable, float]:
    method = settings.method
    loss = float("nan")
    if method in importance.NEEDS_GRADIENTS:
        stats = importance.ActivationStatistics(model) if compensation is not None else None
        fisher = None
        if settings.score is Score.refit_fisher:
            maps = importance.refit_residual_maps(
                model,
                batches,
                geometry,
                constant=compensation is not None,
                dead=None if physical else _removed_features(state),
                skip_layers=trajectory.protected_layers,
            )
            fisher = importance.GateFisher(model, maps)
        elif settings.score is Score.fisher:
            fisher = importance.GateFisher(model)
        # only the centred Taylor score reads ḡ_bias; the gate scores centre with their own per-sequence sums
        with _output_bias_gradients(model, enabled=compensation is not None and fisher is None):
            try:
                loss = importance.accumulate_gradients(model, batches, stats)
            finally:
                if fisher is not None:
                    fisher.close()
            means = None
            if compensation is not None and stats is not None:
                compensation.observe(stats, state)
                means = {key: stats.mean(key) for key in stats.sums}
            if fisher is not None:
                scores = fisher.scores(model, geometry, settings.normalization, means, _item_groups(batches))
            else:
                scores = importance.taylor_scores(model, geometry, settings.normalization, means)
    elif method in importance.NEEDS_ACTIVATIONS:
        stats = importance.ActivationStatistics(model).collect(model, batches)
        loss = stats.loss
        if method is Method.flap:
            scores = importance.flap_scores(model, geometry, stats)
            trajectory.compensation = {
                key: [round(v, 7) for v in stats.mean(key).tolist()] for key in stats.sums
            }
        else:
            eligible = [i for i in range(geometry.num_layers) if i not in trajectory.protected_layers]
            scores = importance.uniform_quantiles(
                importance.wanda_sp_scores(model, geometry, stats), eligible
            )
    elif method is Method.magnitude:
        loss = importance.calibration_loss(model, batches)
        scores = importance.magnitude_scores(model, geometry, settings.normalization)
    else:
        loss = importance.calibration_loss(model, batches)
        scores = importance.random_scores(state, settings.seed)
        physical = True  # random scores are drawn per alive structure already
    return ScoreTable.from_layer_scores(state, scores, geometry, physical), loss


def _item_groups(batches: list) -> torch.Tensor | None:
    """The calibration item of every sequence, in the order the batches ran (None if a batch lacks them)."""
    if any(batch.groups is None for batch in batches):
        return None
    return torch.cat([batch.groups for batch in batches])


def _removed_features(state: PruningState) -> dict[str, list[int]]:
    """Per output projection, the inputs a masked model still computes but no longer uses."""
    removed = {}
    for layer in range(len(state.layers)):
        removed[f"{layer}.attn"], removed[f"{layer}.mlp"] = state.removed_features(layer)
    return removed


@contextmanager
def _output_bias_gradients(model: torch.nn.Module, enabled: bool) -> Iterator[None]:
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


def _check_reachable(geometry: Geometry, eligible: list[int], sparsity: float) -> None:
    prunable = len(eligible) * (
        geometry.layer_params(geometry.num_heads, geometry.num_kv_heads, geometry.intermediate_size)
        - geometry.fixed_layer_params
    )
    reachable = prunable / geometry.dense_decoder_params
    if sparsity > reachable:
        raise UserInputError(
            f"sparsity {sparsity:.3f} exceeds the {reachable:.3f} the unprotected layers hold; "
            "lower the target or protect fewer layers",
            field="sparsities",
        )


def _check_resumable(
    trajectory: Trajectory,
    settings: PruneSettings,
    loaded: LoadedModel,
    items: Sequence[CalibrationItem],
    schedule: list[float],
) -> None:
    if trajectory.settings != settings.model_dump(mode="json"):
        raise UserInputError("the trajectory to resume was made with other settings", field="resume")
    if trajectory.calibration_fingerprint != fingerprint(items):
        raise UserInputError("the trajectory to resume was calibrated on other data", field="resume")
    if trajectory.schedule != schedule:
        raise UserInputError("the trajectory to resume follows another schedule", field="resume")
    sha = loaded.identity.get("weights_sha256")
    if sha and trajectory.base_model.get("weights_sha256") not in (None, sha):
        raise UserInputError("the trajectory to resume was made on other weights", field="resume")


class _Mask:
    """Zeroes removed structures in a dense model: the slower alternative slicing is measured against."""

    def __init__(self, model: torch.nn.Module, geometry: Geometry) -> None:
        self.model = model
        self.geometry = geometry

    @torch.no_grad()
    def apply(self, state: PruningState) -> None:
        hd = self.geometry.head_dim
        for layer, alive in zip(self.model.model.layers, state.layers):
            attention, mlp = layer.self_attn, layer.mlp
            dead_heads = sorted(set(range(self.geometry.num_heads)) - set(alive.heads))
            for h in dead_heads:
                attention.q_proj.weight[h * hd : (h + 1) * hd] = 0
                attention.o_proj.weight[:, h * hd : (h + 1) * hd] = 0
            dead_channels = sorted(set(range(self.geometry.intermediate_size)) - set(alive.channels))
            if dead_channels:
                index = torch.tensor(dead_channels)
                mlp.gate_proj.weight[index] = 0
                mlp.up_proj.weight[index] = 0
                mlp.down_proj.weight[:, index] = 0


class _Compensation:
    """Bias compensation through a GISP run: a removed feature's mean input, times its output weights, stays.

    FLAP's closed form, b = W_out[:, removed] · mean(removed), with each mean measured in the gradient pass of
    the step that removes the feature (on the model it is removed from), not on the dense model. The means
    live in ``trajectory.compensation`` (one per base-model feature; survivors hold their latest measurement),
    so ``pruned_model`` rebuilds any point of the trajectory, and a resumed run, with exactly these biases.
    """

    def __init__(
        self, base: torch.nn.Module, geometry: Geometry, trajectory: Trajectory, physical: bool
    ) -> None:
        self.base = base
        self.geometry = geometry
        self.physical = physical
        if trajectory.compensation is None:
            trajectory.compensation = {}
            for layer in range(geometry.num_layers):
                trajectory.compensation[f"{layer}.attn"] = [0.0] * (geometry.num_heads * geometry.head_dim)
                trajectory.compensation[f"{layer}.mlp"] = [0.0] * geometry.intermediate_size
        self.means = trajectory.compensation

    def _head_features(self, heads: Iterable[int]) -> list[int]:
        hd = self.geometry.head_dim
        return [h * hd + d for h in heads for d in range(hd)]

    def observe(self, stats: importance.ActivationStatistics, state: PruningState) -> None:
        """Record this pass's mean input of every alive feature; dead ones keep their removal-time mean."""
        g = self.geometry
        for layer, alive in enumerate(state.layers):
            heads = alive.heads if self.physical else range(g.num_heads)
            channels = alive.channels if self.physical else range(g.intermediate_size)
            for key, features, live in (
                (f"{layer}.attn", self._head_features(heads), set(self._head_features(alive.heads))),
                (f"{layer}.mlp", list(channels), set(alive.channels)),
            ):
                if not live:
                    continue
                values = stats.mean(key).tolist()
                for position, feature in enumerate(features):
                    if feature in live:
                        self.means[key][feature] = round(values[position], 7)

    def apply(self, model: torch.nn.Module, state: PruningState) -> None:
        """Set every o_proj and down_proj bias to the base bias plus its dead features' compensation."""
        compensate_biases(model, self.base, self.means, state)
