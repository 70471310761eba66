"""The trajectory measured at many points: what a user chooses a checkpoint by ("the smallest model whose
perplexity stays under X"), without pruning again.

Every point is the checkpoint as it would be downloaded (the run's layout, refitted when the run refits),
measured on WikiText-2 test text (which calibration never reads): perplexity over a fixed number of
128-token windows, optionally mean CMQA accuracy (and its ratio to the dense model's) and the latency of one
128-token forward pass. The dense model is measured the same way, first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.engine.trajectory import Trajectory
from core.eval.perplexity import DEFAULT_WINDOW, perplexity_of_ids, tokenize_text, windows_of
from core.jobs.states import sparsity_label

LATENCY_REPEATS = 5


def curve_sparsities(targets: list[float], points: int, reached: float) -> list[float]:
    """``points - 1`` pruned points evenly spaced up to the largest target (the dense model is the first
    point), with every target among them; none beyond what the trajectory reached."""
    top = max(targets)
    grid = [top * index / (points - 1) for index in range(1, points)]
    merged = sorted({round(value, 4) for value in (*grid, *targets) if value <= reached + 1e-9})
    return [value for value in merged if value > 0]


@dataclass
class CurveMeter:
    """Measures one model at a time; the dense model first, so ratios and the ETA have their reference."""

    request: Any  # core.schemas.jobs.CurveRequest
    tokenizer: Any
    device: str = "cpu"
    data_dir: Path | None = None
    dense: dict[str, Any] | None = None
    points: list[dict[str, Any]] = field(default_factory=list)
    _ids: torch.Tensor | None = None

    def _text_ids(self) -> torch.Tensor:
        if self._ids is None:
            from core.data.text import wikitext2_text

            ids = tokenize_text(self.tokenizer, wikitext2_text("test", self.data_dir))
            windows = windows_of(ids, DEFAULT_WINDOW)[: self.request.perplexity_windows]
            self._ids = windows.reshape(-1)
        return self._ids

    def measure(self, model: nn.Module, sparsity: float) -> dict[str, Any]:
        point: dict[str, Any] = {
            "sparsity": sparsity,
            "label": "dense" if sparsity == 0 else sparsity_label(sparsity),
            "parameters": sum(p.numel() for p in model.parameters()),
            "perplexity": perplexity_of_ids(model, self._text_ids(), device=self.device).perplexity,
        }
        if self.request.cmqa_limit:
            point["accuracy"] = self._accuracy(model)
            if self.dense is not None and self.dense.get("accuracy"):
                point["accuracy_ratio"] = point["accuracy"] / self.dense["accuracy"]
        if self.request.latency:
            point["latency_ms"] = _latency_ms(model)
        if sparsity == 0:
            self.dense = point
        else:
            self.points.append(point)
        return point

    def _accuracy(self, model: nn.Module) -> float:
        from core.eval.multiple_choice import evaluate_tasks, mean_accuracy

        results = evaluate_tasks(
            model, self.tokenizer, limit=self.request.cmqa_limit, data_dir=self.data_dir, device=self.device
        )
        return float(mean_accuracy(results)["acc"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense": self.dense,
            "points": sorted(self.points, key=lambda point: point["sparsity"]),
            "measured_on": "each checkpoint as downloaded (refitted when the run refits)",
            "perplexity": {
                "dataset": "wikitext2-raw-test",
                "window": DEFAULT_WINDOW,
                "windows": int(self._text_ids().numel() // DEFAULT_WINDOW),
            },
            "cmqa_limit": self.request.cmqa_limit,
        }


@torch.no_grad()
def _latency_ms(model: nn.Module) -> float:
    """Median wall time of one forward pass over 128 tokens, batch 1 (after a warm-up)."""
    device = next(model.parameters()).device
    vocab = int(model.config.vocab_size)  # type: ignore[union-attr, arg-type]
    ids = torch.randint(0, vocab, (1, DEFAULT_WINDOW), generator=torch.Generator().manual_seed(0))
    ids = ids.to(device)
    times = []
    for repeat in range(LATENCY_REPEATS + 1):
        started = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if repeat:
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def points_to_measure(trajectory: Trajectory, targets: list[float], request: Any) -> list[float]:
    return curve_sparsities(targets, request.points, trajectory.max_sparsity)
