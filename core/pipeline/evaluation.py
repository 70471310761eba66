"""The evaluations a job asks for, run on the dense model once and on each checkpoint as it is built.

Evaluation is optional by design: the report is always written (a finished job always has one), and an
evaluation that fails is recorded in it with its reason rather than failing a job whose pruning succeeded.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from core.engine.trajectory import Trajectory

logger = logging.getLogger(__name__)

SPECIAL_EVALUATIONS = ("perplexity", "gsm8k", "efficiency")  # every other name is a multiple-choice task


@dataclass
class Evaluator:
    """Collects one result per evaluated model (sparsity 0.0: the dense model)."""

    names: list[str]
    tokenizer: Any
    device: str = "cpu"
    data_dir: Path | None = None
    results: dict[float, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.names)

    def _options(self) -> dict[str, Any]:
        tasks = [name for name in self.names if name not in SPECIAL_EVALUATIONS]
        return {
            "tasks": tasks or None,
            "perplexity": "perplexity" in self.names,
            "gsm8k": "gsm8k" in self.names,
            "efficiency": "efficiency" in self.names,
            "data_dir": self.data_dir,
            "device": self.device,
        }

    def evaluate(self, sparsity: float, model: nn.Module) -> None:
        if not self.active or self.error is not None:
            return
        from core.eval import evaluate_model

        try:
            self.results[sparsity] = evaluate_model(model, self.tokenizer, **self._options())
        except Exception as error:  # missing evaluation data or an evaluation bug must not fail a pruned job
            logger.exception("evaluation failed")
            self.error = f"{type(error).__name__}: {error}"

    def report(self, model_identity: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, bytes]]:
        """``core.eval``'s report over every evaluated model and its plots; None when none was asked."""
        if not self.active:
            return None, {}
        if self.error is not None:
            return {"error": self.error, "requested": self.names}, {}
        from core.eval import build_report
        from core.eval.plots import plot_report

        report = build_report(self.results, model=model_identity)
        files: dict[str, bytes] = {}
        with tempfile.TemporaryDirectory(prefix="gisp-plots-") as tmp:
            try:
                for path in plot_report(report, Path(tmp)):
                    files[path.name] = path.read_bytes()
            except Exception:
                logger.exception("plotting the evaluation report failed")
        return report, files


def trajectory_summary(trajectory: Trajectory) -> dict[str, Any]:
    """Each step's figures; ``start_sparsity`` is the sparsity of the model whose loss the step recorded."""
    steps, previous = [], 0.0
    for step in trajectory.steps:
        steps.append(
            {
                "step": step.index,
                "target_sparsity": step.target_sparsity,
                "start_sparsity": previous,
                "sparsity": step.sparsity,
                "calibration_loss": step.loss,
                "parameters": step.parameters,
                "seconds": step.seconds,
            }
        )
        previous = step.sparsity
    return {
        "steps": steps,
        "dense_parameters": trajectory.dense_parameters,
        "max_sparsity": trajectory.max_sparsity,
        "complete": trajectory.is_complete,
        "base_model": trajectory.base_model,
        "calibration_fingerprint": trajectory.calibration_fingerprint,
    }


def loss_plot(trajectory: Trajectory) -> bytes:
    """Calibration loss against the sparsity of the model it was measured on, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = trajectory_summary(trajectory)["steps"]
    figure, axis = plt.subplots(figsize=(5, 3.2), dpi=100)
    axis.plot([s["start_sparsity"] for s in summary], [s["calibration_loss"] for s in summary], marker="o")
    axis.set_xlabel("parameter sparsity of the model scored")
    axis.set_ylabel("calibration loss")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
