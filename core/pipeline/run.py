"""One run, from a job spec to its outputs: load → calibrate → prune → build checkpoints → evaluate → report.

``gisp prune`` and the service's worker both call :func:`run_pipeline`; they differ only in where the model
and the calibration data come from (:class:`Inputs`) and where the outputs go (``Sink``). Every checkpoint
is evaluated as it is built, from the model just saved, never rebuilt (and refitted) a second time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from core.data.calibration import CalibrationItem
from core.departures import departures_from_paper
from core.engine.architectures import family_of
from core.engine.loading import LoadedModel
from core.engine.materialize import checkpoint_at, materialize_model, refresh_model_card
from core.engine.objectives import DEFAULT_BATCH_SIZE
from core.engine.pruner import prune
from core.engine.trajectory import StepRecord, Trajectory
from core.jobs.states import Phase
from core.pipeline.curve import CurveMeter, points_to_measure
from core.pipeline.evaluation import Evaluator, loss_plot, trajectory_summary
from core.pipeline.progress import PhaseProgress, ProgressTracker
from core.pipeline.sink import Sink
from core.pruning_spec import Layout, PruneSettings, fit_to_layout
from core.schemas.jobs import CurveRequest

GGUF_FILE = "model.gguf"  # the one file of a GGUF checkpoint variant


class RunSpec(Protocol):
    """What the pipeline reads of a job: the engine's settings plus the layout and the evaluations."""

    layout: Layout
    evaluations: list[str]
    curve: CurveRequest | None

    def engine_settings(self) -> PruneSettings: ...


class Inputs(Protocol):
    def load_model(self) -> LoadedModel: ...

    def calibration_items(self) -> Sequence[CalibrationItem]: ...


@dataclass
class RunOptions:
    """How this machine runs a job: none of it changes what the job computes, except within float noise."""

    batch_size: int = DEFAULT_BATCH_SIZE
    device: str = "cpu"
    data_dir: Path | None = None  # evaluation data


@dataclass
class RunHooks:
    on_step: Callable[[StepRecord, Trajectory], None] | None = None
    should_stop: Callable[[], bool] | None = None
    on_progress: Callable[[PhaseProgress], None] | None = None


@dataclass
class Run:
    """What a run has loaded, for the phases after pruning (and for on-demand checkpoints)."""

    loaded: LoadedModel
    items: Sequence[CalibrationItem]
    sink: Sink
    tracker: ProgressTracker
    evaluator: Evaluator
    curve: CurveMeter | None = None
    checkpoints: list[float] = field(default_factory=list)


def run_pipeline(
    spec: RunSpec,
    inputs: Inputs,
    sink: Sink,
    *,
    options: RunOptions | None = None,
    hooks: RunHooks | None = None,
    resume: Trajectory | None = None,
) -> Trajectory:
    """Prune to every target (resuming ``resume``), then build, store and evaluate each target checkpoint,
    measure the curve if asked, and write the report.

    Returns the trajectory; an incomplete one means ``should_stop`` stopped the run before its last step.
    """
    options, hooks = options or RunOptions(), hooks or RunHooks()
    settings = spec.engine_settings()
    tracker = ProgressTracker(
        units=_units(settings, spec), refit_share=settings.reconstruction_samples / settings.samples
    )
    if hooks.on_progress is not None:
        tracker.report = hooks.on_progress
    tracker.start(Phase.loading)
    loaded, items = inputs.load_model(), inputs.calibration_items()
    settings = fit_to_layout(settings, family_of(loaded.model.config), spec.layout)
    tracker.unit_done()
    evaluator = Evaluator(list(spec.evaluations), loaded.tokenizer, options.device, options.data_dir)
    curve = (
        None
        if spec.curve is None
        else CurveMeter(spec.curve, loaded.tokenizer, options.device, options.data_dir)
    )
    run = Run(loaded, items, sink, tracker, evaluator, curve)
    _evaluate(run, 0.0, loaded.model)  # first, so the ETA knows what an evaluation costs from the start
    trajectory = _prune(run, settings, options, hooks, resume)
    if not trajectory.is_complete:
        return trajectory
    _targets_and_curve(run, trajectory, settings.sparsities, spec)
    tracker.start(Phase.uploading)
    report, files = job_report(trajectory, settings.sparsities, evaluator)
    if curve is not None:
        report["curve"] = curve.to_dict()
    sink.save_report(report, files)
    tracker.unit_done()
    tracker.start(Phase.done)
    return trajectory


def _targets_and_curve(run: Run, trajectory: Trajectory, targets: list[float], spec: RunSpec) -> None:
    """Build and evaluate every target (a target stored by an earlier attempt is only evaluated), then the
    curve's other points, each built in memory as it would be downloaded."""
    points = [] if run.curve is None else points_to_measure(trajectory, targets, spec.curve)
    run.tracker.units[Phase.evaluating] = (1 + len(targets)) * run.evaluator.active + (
        1 + len(points)
    ) * bool(run.curve)
    for sparsity in targets:
        stored = run.sink.has_checkpoint(sparsity)
        if stored and not run.evaluator.active and not (run.curve and round(sparsity, 4) in points):
            run.tracker.unit_done()
            continue
        model: nn.Module
        curve_point = round(sparsity, 4) in points
        if stored:
            _, model = checkpoint_at(run.loaded, trajectory, sparsity, spec.layout, run.items)
            _evaluate(run, sparsity, model, curve_point=curve_point)
        else:  # evaluated before it is stored, so its model card carries the results
            model = build_checkpoint(
                run,
                trajectory,
                sparsity,
                spec.layout,
                is_target=True,
                evaluate=partial(_evaluate, run, sparsity, curve_point=curve_point),
            )
        del model
    for sparsity in points:
        if any(round(target, 4) == sparsity for target in targets):
            continue
        _, model = checkpoint_at(run.loaded, trajectory, sparsity, spec.layout, run.items)
        _evaluate(run, sparsity, model, curve_point=True, report=False)
        del model


def _units(settings: PruneSettings, spec: RunSpec) -> dict[Phase, int]:
    targets = len(settings.sparsities)
    curve = 0 if spec.curve is None else spec.curve.points
    return {
        Phase.loading: 1,
        Phase.pruning: len(settings.sparsities)
        + settings.step_count,  # an upper bound until the schedule is known
        Phase.building_checkpoints: targets,
        Phase.evaluating: (1 + targets) * bool(spec.evaluations) + curve,
        Phase.uploading: 1,
    }


def _prune(
    run: Run, settings: PruneSettings, options: RunOptions, hooks: RunHooks, resume: Trajectory | None
) -> Trajectory:
    def on_step(record: StepRecord, trajectory: Trajectory) -> None:
        run.sink.save_trajectory(trajectory)
        if hooks.on_step is not None:
            hooks.on_step(record, trajectory)
        run.tracker.units[Phase.pruning] = record.total_steps
        run.tracker.unit_done(record.seconds)

    run.tracker.start(Phase.pruning)
    run.tracker.done[Phase.pruning] = len(resume.steps) if resume is not None else 0
    trajectory = prune(
        run.loaded,
        run.items,
        settings,
        batch_size=options.batch_size,
        on_step=on_step,
        should_stop=hooks.should_stop,
        resume=resume,
    )
    run.sink.save_trajectory(trajectory)
    return trajectory


def build_checkpoint(
    run: Run,
    trajectory: Trajectory,
    sparsity: float,
    layout: Layout,
    *,
    is_target: bool,
    gguf_type: str | None = None,
    evaluate: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Materialise (and refit) one checkpoint, hand its folder to the sink; returns the model it holds.

    ``evaluate`` runs on the built model before the folder is stored, and its results go into the model card.
    With ``gguf_type`` the sink gets a folder holding only ``model.gguf``, the checkpoint exported for llama.cpp.
    """
    run.tracker.start(Phase.building_checkpoints)
    with tempfile.TemporaryDirectory(prefix="gisp-ckpt-") as tmp:
        folder, model = materialize_model(
            run.loaded, trajectory, sparsity, Path(tmp) / "checkpoint", layout=layout, calibration=run.items
        )
        if evaluate is not None:
            evaluate(model)
            result = run.evaluator.results.get(sparsity)
            if result is not None:
                refresh_model_card(folder, evaluation=result.get("metrics"))
            run.tracker.start(Phase.building_checkpoints)
        if gguf_type is not None:
            from core.engine.export import export_gguf

            folder = export_gguf(folder, Path(tmp) / "gguf" / GGUF_FILE, gguf_type=gguf_type).parent
        run.sink.save_checkpoint(folder, sparsity=sparsity, layout=layout.value, is_target=is_target)
    run.checkpoints.append(sparsity)
    run.tracker.unit_done()
    return model


def _evaluate(
    run: Run, sparsity: float, model: nn.Module, *, curve_point: bool = True, report: bool = True
) -> None:
    """The job's evaluations (``report``) and the curve's measurement (``curve_point``) of one model."""
    evaluations = report and run.evaluator.active
    measure = curve_point and run.curve is not None
    if not (evaluations or measure):
        return
    run.tracker.start(Phase.evaluating)
    if evaluations:
        run.evaluator.evaluate(sparsity, model)
    if measure:
        assert run.curve is not None
        run.curve.measure(model, sparsity)
    run.tracker.unit_done()


def job_report(
    trajectory: Trajectory, targets: list[float], evaluator: Evaluator
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report JSON (trajectory summary, targets, evaluations) and the files it links to."""
    evaluation, files = evaluator.report(dict(trajectory.base_model))
    files["loss.png"] = loss_plot(trajectory)
    report = {
        "trajectory": trajectory_summary(trajectory),
        "targets": targets,
        "departures_from_paper": [d.as_dict() for d in departures_from_paper(trajectory.settings)],
        "evaluation": evaluation,
        "files": sorted(files),
    }
    return report, files


def materialize_on_demand(
    inputs: Inputs,
    sink: Sink,
    trajectory: Trajectory,
    sparsity: float,
    layout: Layout | str,
    *,
    gguf_type: str | None = None,
) -> None:
    """A checkpoint asked for after the run (any sparsity the trajectory reached, in either layout, as a folder
    or as a GGUF file), built like a target."""
    loaded, items = inputs.load_model(), inputs.calibration_items()
    run = Run(loaded, items, sink, ProgressTracker(units={}), Evaluator([], loaded.tokenizer))
    build_checkpoint(run, trajectory, sparsity, Layout(layout), is_target=False, gguf_type=gguf_type)
