"""The one pruning loop every method shares: schedule → for each step: score → select → remove → record.

Methods differ only in how they score (``core.engine.methods``); the schedule, eligibility, global ranking,
sparsity accounting and the trajectory are the same for all of them, so their results compare at equal
measured sparsity.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from tqdm.auto import tqdm

from core.data.calibration import CalibrationItem, fingerprint
from core.engine.architectures import geometry_of
from core.engine.compensation import BiasCompensation
from core.engine.loading import LoadedModel
from core.engine.methods import Scored, StepInput, scorer_for
from core.engine.methods.gradients import calibration_loss
from core.engine.objectives import DEFAULT_BATCH_SIZE, Batch, CalibrationPool
from core.engine.ranking import ScoreTable, select, select_count, survivor_scores
from core.engine.schedule import paper_removal_count, protected_layers, step_targets
from core.engine.structures import Geometry, PruningState
from core.engine.trajectory import StepRecord, Trajectory
from core.engine.versions import library_versions
from core.engine.views import SLICED, StructureView
from core.errors import UserInputError
from core.pruning_spec import PruneSettings

logger = logging.getLogger(__name__)

StepCallback = Callable[[StepRecord, Trajectory], None]

ONE_SHOT_LOSS_SEQUENCES = 32


def prune(
    loaded: LoadedModel,
    items: Sequence[CalibrationItem],
    settings: PruneSettings,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_step: StepCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    resume: Trajectory | None = None,
    view: StructureView = SLICED,
    progress: bool = False,
) -> Trajectory:
    """Run ``settings.method`` to every target sparsity and return the trajectory.

    ``resume`` continues a partial trajectory of the same run: the removed structures are sliced away and
    the remaining steps draw the same calibration batches (and micro-batches), so the result equals an
    uninterrupted run. ``view`` is how removals show in the working model (sliced away; see ``views``).
    """
    run = PruningRun(
        loaded, items, settings.engine_settings(), batch_size=batch_size, resume=resume, view=view
    )
    bar = tqdm(total=len(run.schedule), initial=run.done, disable=not progress, unit="step")
    try:
        for step in range(run.done, len(run.schedule)):
            if should_stop is not None and should_stop():
                break
            record = run.step(step)
            bar.set_postfix(loss=f"{record.loss:.4f}", sparsity=f"{record.sparsity:.3f}")
            bar.update(1)
            if on_step is not None:
                on_step(record, run.trajectory)
    finally:
        bar.close()
        run.release()
    return run.trajectory


class PruningRun:
    """One run's working model, calibration draws, scorer and trajectory, advanced a step at a time."""

    def __init__(
        self,
        loaded: LoadedModel,
        items: Sequence[CalibrationItem],
        settings: PruneSettings,
        *,
        batch_size: int,
        resume: Trajectory | None,
        view: StructureView,
    ) -> None:
        self.base, self.settings, self.view = loaded.model, settings, view
        self.geometry = geometry_of(self.base.config)
        self.protected = protected_layers(settings, self.geometry.num_layers)
        self.eligible = [layer for layer in range(self.geometry.num_layers) if layer not in self.protected]
        if not self.eligible:
            raise UserInputError("every layer is protected; nothing can be pruned", field="protected_layers")
        self.schedule = step_targets(settings)
        _check_reachable(self.geometry, self.eligible, settings.max_sparsity)
        if settings.traits.exact:
            _check_paper_reaches(self.geometry, self.eligible, settings)
        self.trajectory = resume or self._new_trajectory(loaded, items, batch_size)
        if resume is not None:
            _check_resumable(resume, settings, loaded, items, self.schedule)
        self.pool = CalibrationPool(items, loaded.tokenizer, settings, self.trajectory.batch_size)
        self.dense_parameters = self.trajectory.dense_parameters
        self.scorer = scorer_for(settings)
        self.model = view.working_model(self.base)
        self.scorer.prepare(self.model)
        dense = PruningState.dense(self.geometry)
        self.compensation = (
            BiasCompensation.for_run(self.base, self.trajectory) if settings.bias_compensation else None
        )
        if self.compensation is not None:
            self.compensation.apply(
                self.model, dense
            )  # biases exist from the start: the scores read their gradients
        self.one_shot: ScoreTable | None = None
        self.scoring_seconds, self.loss_batches, self.loss_scale = 0.0, list[Batch](), 1.0
        if (
            not settings.traits.iterative and not settings.traits.per_target
        ):  # scored once, on the dense model
            self._score_once(dense)
        self.state = self.trajectory.state_after_steps(self.done)
        view.remove(self.model, dense, self.state)
        if self.compensation is not None:
            self.compensation.apply(self.model, self.state)

    @property
    def done(self) -> int:
        return len(self.trajectory.steps)

    def _new_trajectory(
        self, loaded: LoadedModel, items: Sequence[CalibrationItem], batch_size: int
    ) -> Trajectory:
        return Trajectory(
            geometry=self.geometry,
            settings=self.settings,
            base_model=dict(loaded.identity),
            calibration_fingerprint=fingerprint(items),
            dense_parameters=sum(p.numel() for p in self.base.parameters()),
            protected_layers=self.protected,
            schedule=self.schedule,
            versions=library_versions(),
            batch_size=batch_size,
        )

    def _score_once(self, dense: PruningState) -> None:
        """One-shot methods: score the dense model; each step then records the loss on a bounded share of
        the pool (a full pass per step would cost more than the scoring), scaled back to the pool's."""
        started = time.perf_counter()
        batches = self.pool.batches(0)
        self.one_shot = self._table(self._scored(dense, batches), dense)
        self.scoring_seconds = time.perf_counter() - started
        self.loss_batches, self.loss_scale = _loss_share(batches, self.trajectory.batch_size)

    def _scored(self, state: PruningState, batches: list[Batch], target: float = 0.0) -> Scored:
        step = StepInput(
            self.model,
            state,
            self.geometry,
            self.settings,
            batches,
            self.protected,
            self.compensation,
            self.view,
            target,
        )
        scored = self.scorer.score(step)
        if scored.compensation is not None:
            self.trajectory.compensation = scored.compensation
        return scored

    def _table(self, scored: Scored, state: PruningState) -> ScoreTable:
        sliced = self.view.sliced or self.scorer.scores_alive_only
        return ScoreTable.from_layer_scores(state, scored.scores, self.geometry, sliced)

    def _ranked(self, step: int) -> tuple[ScoreTable, float]:
        if self.one_shot is None:
            # gisp-paper reads its whole calibration set at every step: the same draw each time
            traits = self.settings.traits
            batches = self.pool.batches(0 if traits.exact or traits.per_target else step)
            scored = self._scored(self.state, batches, self.schedule[step])
            return self._table(scored, self.state), scored.loss
        loss = calibration_loss(self.model, self.loss_batches) * self.loss_scale
        return self.one_shot.alive_in(self.state), loss

    def step(self, step: int) -> StepRecord:
        """Score, remove the lowest-ranked eligible structures down to the step's target, record the step."""
        started = time.perf_counter()
        ranked, loss = self._ranked(step)
        if self.one_shot is not None and step == 0:
            started -= self.scoring_seconds
        if self.settings.traits.exact:  # the schedule counts structures (gisp-paper)
            g = self.geometry
            total = paper_removal_count(
                g.num_layers * (g.num_heads + g.intermediate_size), self.schedule[step]
            )
            new_state, removed, threshold = select_count(self.state, ranked, self.eligible, total)
        else:
            new_state, removed, threshold = select(self.state, ranked, self.eligible, self.schedule[step])
        self.view.remove(self.model, self.state, new_state)
        if self.compensation is not None:
            self.compensation.apply(self.model, new_state)
        self.state = new_state
        g = self.geometry
        record = StepRecord(
            index=step + 1,
            total_steps=len(self.schedule),
            target_sparsity=self.schedule[step],
            sparsity=new_state.sparsity(),
            structure_ratio=new_state.structure_ratio(),
            threshold=threshold,
            loss=loss,
            seconds=time.perf_counter() - started,
            removed=[s.to_list() for s in removed],
            parameters=self.dense_parameters - (g.dense_decoder_params - new_state.decoder_params()),
        )
        self.trajectory.steps.append(record)
        if self.trajectory.is_complete:
            self.trajectory.survivor_scores = survivor_scores(new_state, ranked)
        return record

    def release(self) -> None:
        self.model.zero_grad(set_to_none=True)
        self.base.zero_grad(set_to_none=True)


def _loss_share(batches: list[Batch], batch_size: int) -> tuple[list[Batch], float]:
    """The first ~``ONE_SHOT_LOSS_SEQUENCES`` sequences, and the factor that puts their loss on the pool's scale."""
    share = batches[: max(1, -(-ONE_SHOT_LOSS_SEQUENCES // batch_size))]
    total = sum(float(b.weights.abs().sum()) for b in batches)
    part = sum(float(b.weights.abs().sum()) for b in share)
    return share, (total / part if part > 0 else 1.0)


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


def _check_paper_reaches(geometry: Geometry, eligible: list[int], settings: PruneSettings) -> None:
    """gisp-paper's schedule ends at a count of structures: refuse targets that even its best case misses.

    Which structures go is known only once it has run; the bound assumes the largest go first (heads, each
    freeing its KV head), so a refusal is certain and a target it accepts may still end out of reach (the
    checkpoint then says so).
    """
    g = geometry
    count = paper_removal_count(
        g.num_layers * (g.num_heads + g.intermediate_size), settings.experimental.structure_ratio
    )
    heads = min(count, len(eligible) * g.num_heads)
    channels = min(count - heads, len(eligible) * g.intermediate_size)
    freed = heads * g.query_head_params + channels * g.channel_params
    freed += (heads // max(g.group_size, 1)) * g.kv_head_params
    if settings.max_sparsity > freed / g.dense_decoder_params:
        raise UserInputError(
            f"gisp-paper stops at {settings.experimental.structure_ratio:.2f} of all heads and channels, which "
            f"cannot reach sparsity {settings.max_sparsity:.3f}; raise experimental.structure_ratio",
            field="sparsities",
        )


def _check_resumable(
    trajectory: Trajectory,
    settings: PruneSettings,
    loaded: LoadedModel,
    items: Sequence[CalibrationItem],
    schedule: list[float],
) -> None:
    if trajectory.settings != settings:
        raise UserInputError("the trajectory to resume was made with other settings", field="resume")
    if trajectory.calibration_fingerprint != fingerprint(items):
        raise UserInputError("the trajectory to resume was calibrated on other data", field="resume")
    if trajectory.schedule != schedule:
        raise UserInputError("the trajectory to resume follows another schedule", field="resume")
    sha = loaded.identity.get("weights_sha256")
    if sha and trajectory.base_model.get("weights_sha256") not in (None, sha):
        raise UserInputError("the trajectory to resume was made on other weights", field="resume")
