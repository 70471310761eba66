"""The job report: a summary of the trajectory, plus the evaluations asked for when ``core.eval`` offers them.

Evaluation is optional by design: the report is always written (so a finished job always has one), and an
evaluation the installed ``core.eval`` cannot run is listed as skipped with the reason rather than failing
a job whose pruning succeeded.
"""

from __future__ import annotations

import io
import logging
from typing import Any

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


def run_evaluations(
    loaded: Any, trajectory: Any, sparsities: list[float], names: list[str]
) -> dict[str, Any]:
    """Results per sparsity and evaluation, through ``core.eval.evaluate_model`` when it exists."""
    if not names:
        return {}
    try:
        from core.eval import evaluate_model  # type: ignore[attr-defined]
    except ImportError:
        return {"skipped": "this worker's evaluation module offers no evaluate_model", "requested": names}
    from core.engine.materialize import pruned_model

    results: dict[str, Any] = {}
    for sparsity in sparsities:
        model = pruned_model(loaded, trajectory, trajectory.state_at(sparsity))
        try:
            results[f"{sparsity:.4f}"] = evaluate_model(model, loaded.tokenizer, names)
        except Exception as error:  # an evaluation bug must not fail a finished pruning job
            logger.exception("evaluation at sparsity %s failed", sparsity)
            results[f"{sparsity:.4f}"] = {"error": f"{type(error).__name__}: {error}"}
    return results


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
    *, loaded: Any, trajectory: Any, targets: list[float], evaluations: list[str]
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The report JSON and the files it links to (name -> bytes, served under /report/files/)."""
    files: dict[str, bytes] = {}
    plot = loss_plot(trajectory)
    if plot is not None:
        files["loss.png"] = plot
    report = {
        "trajectory": trajectory_summary(trajectory),
        "targets": targets,
        "evaluations": run_evaluations(loaded, trajectory, targets, evaluations),
        "files": sorted(files),
    }
    return report, files
