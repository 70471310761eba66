"""`evaluate_model`: every evaluation of one model, split into repeatable numbers and timings.

The returned dict has ``metrics`` (deterministic: same inputs, same numbers), ``timing`` (wall
clock, latency, memory), ``settings`` (what fixes the numbers) and ``dataset_fingerprints``; it is the
per-sparsity input of :func:`core.eval.report.build_report`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from core.data.paths import resolve_data_dir
from core.data.tasks import split_files
from core.eval.efficiency import EfficiencySettings, measure_speed, model_size
from core.eval.gsm8k import Gsm8kSettings, evaluate_gsm8k, gsm8k_files
from core.eval.multiple_choice import evaluate_tasks, expand_tasks, mean_accuracy
from core.eval.perplexity import DEFAULT_WINDOW, wikitext2_perplexity, wikitext2_test_files
from core.eval.report import dataset_fingerprints
from core.eval.runtime import resolve_device


def evaluate_model(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    tasks: str | Sequence[str] | None = "cmqa",
    limit: int | None = None,
    perplexity_window: int | None = DEFAULT_WINDOW,
    perplexity: bool = True,
    gsm8k: bool | Gsm8kSettings = False,
    efficiency: bool | EfficiencySettings = False,
    device: str | torch.device | None = None,
    data_dir: Path | None = None,
    batch_size: int = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluate one model and return ``{"metrics", "timing", "settings", "dataset_fingerprints"}``.

    `tasks` None or empty skips multiple choice; `perplexity_window=None` uses the model's full
    context; `gsm8k=True` runs GSM8K with default :class:`Gsm8kSettings`; `efficiency=True` counts
    parameters and FLOPs (metrics) and measures speed and memory (timing) on `device`. The result
    holds only JSON types, so it compares equal to a report read back from disk.
    """
    data_dir = resolve_data_dir(data_dir)
    target = resolve_device(model, device)
    task_names = expand_tasks(tasks) if tasks else []
    speed_settings = (
        efficiency
        if isinstance(efficiency, EfficiencySettings)
        else (EfficiencySettings() if efficiency else None)
    )
    gsm8k_settings = gsm8k if isinstance(gsm8k, Gsm8kSettings) else (Gsm8kSettings() if gsm8k else None)
    settings: dict[str, Any] = {
        "tasks": task_names,
        "limit": limit,
        "perplexity": {"dataset": "wikitext2-raw-test", "window": perplexity_window} if perplexity else None,
        "gsm8k": asdict(gsm8k_settings) if gsm8k_settings else None,
        "efficiency": asdict(speed_settings) if speed_settings else None,
        "batch_size": batch_size,
        "seed": seed,
        "device_type": target.type,
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }
    metrics: dict[str, Any] = {}
    timing: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
    files: list[Path] = []

    if perplexity:
        start = time.perf_counter()
        result = wikitext2_perplexity(
            model, tokenizer, data_dir=data_dir, window=perplexity_window, device=target
        )
        timing["perplexity_s"] = time.perf_counter() - start
        metrics["perplexity"] = {"dataset": "wikitext2-raw-test", **result.to_dict()}
        files += wikitext2_test_files(data_dir)

    if task_names:
        start = time.perf_counter()
        results = evaluate_tasks(
            model, tokenizer, task_names, limit=limit, data_dir=data_dir, batch_size=batch_size, device=target
        )
        timing["multiple_choice_s"] = time.perf_counter() - start
        metrics["multiple_choice"] = {task: _task_entry(result) for task, result in results.items()}
        metrics["mean_accuracy"] = mean_accuracy(results)
        for task in task_names:
            files += split_files(task, "eval", data_dir)

    if gsm8k_settings is not None:
        start = time.perf_counter()
        metrics["gsm8k"], _ = evaluate_gsm8k(
            model, tokenizer, gsm8k_settings, data_dir=data_dir, device=target
        )
        timing["gsm8k_s"] = time.perf_counter() - start
        files += gsm8k_files(gsm8k_settings, data_dir)

    if speed_settings is not None:
        metrics["efficiency"] = model_size(model, speed_settings.seq_len).to_dict()
        timing["efficiency"] = measure_speed(
            model,
            device=target,
            seq_len=speed_settings.seq_len,
            batch_sizes=speed_settings.batch_sizes,
            repeats=speed_settings.repeats,
            decode_steps=speed_settings.decode_steps,
            seed=seed,
        ).to_dict()

    evaluation = {
        "metrics": metrics,
        "timing": timing,
        "settings": settings,
        "dataset_fingerprints": dataset_fingerprints(files, data_dir),
    }
    return json.loads(json.dumps(evaluation))  # tuples -> lists, as after a round trip through a file


def _task_entry(result: Any) -> dict[str, Any]:
    """Report form of a task result: headline numbers, then compact per-item choices."""
    entry = result.to_dict(with_predictions=False)
    entry["items"] = {
        "ids": [p.id for p in result.predictions],
        "label": [p.label for p in result.predictions],
        "chosen": [p.chosen for p in result.predictions],
        "chosen_norm": [p.chosen_norm for p in result.predictions],
    }
    return entry
