"""The job report: a summary of the trajectory, plus the evaluations asked for when ``core.eval`` offers them.

Evaluation is optional by design: the report is always written (so a finished job always has one), and an
evaluation the installed ``core.eval`` cannot run is listed as skipped with the reason rather than failing
a job whose pruning succeeded.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from core.pruning_spec import Layout
from core.settings import Settings

logger = logging.getLogger(__name__)


def trajectory_summary(trajectory: Any) -> dict[str, Any]:
    return {
        "steps": [
            {
                "step": step.index,
                "target_sparsity": step.target_sparsity,
                "sparsity": step.sparsity,
                "calibration_loss": step.loss,
                "parameters": step.parameters,
                "seconds": step.seconds,
            }
            for step in trajectory.steps
        ],
        "dense_parameters": trajectory.dense_parameters,
        "max_sparsity": trajectory.max_sparsity,
        "complete": trajectory.is_complete,
        "base_model": trajectory.base_model,
        "calibration_fingerprint": trajectory.calibration_fingerprint,
    }


SPECIAL_EVALUATIONS = {"perplexity", "gsm8k", "efficiency"}


def run_evaluations(
    *,
    loaded: Any,
    trajectory: Any,
    calibration: list[Any],
    layout: Layout,
    sparsities: list[float],
    names: list[str],
    settings: Settings,
) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
    """``core.eval``'s report over the dense model and every target, and its plots; None when none asked.

    ``names``: "perplexity" (WikiText-2 test), "gsm8k", "efficiency", or multiple-choice task names.
    """
    if not names:
        return None, {}
    try:
        from core.eval import build_report as eval_report
        from core.eval import evaluate_model
        from core.eval.plots import plot_report
    except ImportError as error:
        return {"skipped": f"evaluation unavailable on this worker ({error})", "requested": names}, {}
    from core.engine.materialize import checkpoint_at

    tasks = [name for name in names if name not in SPECIAL_EVALUATIONS]
    options = {
        "tasks": tasks or None,
        "perplexity": "perplexity" in names,
        "gsm8k": "gsm8k" in names,
        "efficiency": "efficiency" in names,
        "data_dir": settings.data_dir,
        "device": settings.worker_device,
    }
    try:
        results = {0.0: evaluate_model(loaded.model, loaded.tokenizer, **options)}
        for sparsity in sparsities:
            _, model = checkpoint_at(loaded, trajectory, sparsity, layout, calibration)
            results[sparsity] = evaluate_model(model, loaded.tokenizer, **options)
        report = eval_report(results, model=dict(trajectory.base_model))
    except Exception as error:  # missing evaluation data or an evaluation bug must not fail a pruned job
        logger.exception("evaluation failed")
        return {"error": f"{type(error).__name__}: {error}", "requested": names}, {}
    files: dict[str, bytes] = {}
    with tempfile.TemporaryDirectory(prefix="gisp-plots-") as tmp:
        try:
            for path in plot_report(report, Path(tmp)):
                files[path.name] = path.read_bytes()
        except Exception:
            logger.exception("plotting the evaluation report failed")
    return report, files


def loss_plot(trajectory: Any) -> bytes | None:
    """Calibration loss against sparsity as a PNG, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.plot([s.sparsity for s in trajectory.steps], [s.loss for s in trajectory.steps], marker="o")
    axis.set_xlabel("parameter sparsity")
    axis.set_ylabel("calibration loss (entering step)")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def build_report(
    *,
    loaded: Any,
    trajectory: Any,
    calibration: list[Any],
    layout: Layout,
    targets: list[float],
    evaluations: list[str],
    settings: Settings,
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report JSON and the files it links to (name -> bytes, served under /report/files/).

    The evaluated models are the checkpoints as downloaded (refitted on ``calibration`` where the run asks).
    """
    evaluation, files = run_evaluations(
        loaded=loaded,
        trajectory=trajectory,
        calibration=calibration,
        layout=layout,
        sparsities=targets,
        names=evaluations,
        settings=settings,
    )
    plot = loss_plot(trajectory)
    if plot is not None:
        files["loss.png"] = plot
    report = {
        "trajectory": trajectory_summary(trajectory),
        "targets": targets,
        "evaluation": evaluation,
        "files": sorted(files),
    }
    return report, files
