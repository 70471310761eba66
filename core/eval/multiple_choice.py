"""Zero-shot multiple-choice accuracy, scored exactly like lm-eval-harness.

Each option's score is the summed log-likelihood of its continuation given its context (see
`loglikelihood.py`). ``acc`` takes the argmax of the sums; ``acc_norm`` the argmax of the sums divided
by the option's length in characters, where, as in lm-eval, the length is that of the choice text
without the ``" "`` target delimiter. For WinoGrande the continuation is shared, so ``acc_norm``
equals ``acc`` (lm-eval reports only ``acc`` there). Ties go to the first option, like ``np.argmax``.
Intervals are 95% Wilson score intervals (`stats.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.items import MultipleChoiceItem
from core.data.tasks import CMQA, CMQA_TASKS, load_task
from core.eval.loglikelihood import loglikelihoods
from core.eval.stats import INTERVAL_METHOD, MEAN_INTERVAL_METHOD, mean_interval, wilson_interval


@dataclass(frozen=True)
class ItemPrediction:
    """What the model chose for one item, with the per-option scores behind the choice."""

    id: str
    label: int
    chosen: int
    chosen_norm: int
    logprobs: list[float]


@dataclass(frozen=True)
class TaskResult:
    """Accuracy of one task over `n` items, with intervals and every item's choice."""

    task: str
    n: int
    acc: float
    acc_norm: float
    acc_interval: tuple[float, float]
    acc_norm_interval: tuple[float, float]
    interval_method: str = INTERVAL_METHOD
    predictions: list[ItemPrediction] = field(default_factory=list)

    def to_dict(self, with_predictions: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data["acc_interval"] = list(self.acc_interval)
        data["acc_norm_interval"] = list(self.acc_norm_interval)
        if not with_predictions:
            data.pop("predictions")
        return data


def expand_tasks(tasks: str | Sequence[str]) -> list[str]:
    """``"cmqa"`` or a comma list -> task names, in a fixed order, duplicates removed."""
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    out: list[str] = []
    for name in (n.strip() for n in names):
        for task in CMQA_TASKS if name == CMQA else (name,):
            if task and task not in out:
                if task not in CMQA_TASKS:
                    raise ValueError(
                        f"unknown multiple-choice task {task!r}; expected {CMQA} or one of {CMQA_TASKS}"
                    )
                out.append(task)
    return out


def choice_length(choice: str) -> int:
    """Characters lm-eval normalises by: the choice text without its leading target delimiter."""
    return len(choice[1:]) if choice.startswith(" ") else len(choice)


def _first_argmax(values: Sequence[float]) -> int:
    best = 0
    for index, value in enumerate(values):
        if value > values[best]:
            best = index
    return best


def score_items(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[MultipleChoiceItem],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> list[ItemPrediction]:
    """Every option of every item in one batched pass, then the lm-eval argmax rules per item."""
    requests = [pair for item in items for pair in item.requests]
    scores = loglikelihoods(model, tokenizer, requests, batch_size=batch_size, device=device)
    predictions: list[ItemPrediction] = []
    position = 0
    for item in items:
        logprobs = [score.logprob for score in scores[position : position + len(item.choices)]]
        position += len(item.choices)
        normalised = [lp / max(choice_length(c), 1) for lp, c in zip(logprobs, item.choices, strict=True)]
        predictions.append(
            ItemPrediction(
                id=item.id,
                label=item.label,
                chosen=_first_argmax(logprobs),
                chosen_norm=_first_argmax(normalised),
                logprobs=logprobs,
            )
        )
    return predictions


def summarise(task: str, predictions: Sequence[ItemPrediction]) -> TaskResult:
    """Accuracies and Wilson intervals from per-item predictions."""
    n = len(predictions)
    correct = sum(p.chosen == p.label for p in predictions)
    correct_norm = sum(p.chosen_norm == p.label for p in predictions)
    return TaskResult(
        task=task,
        n=n,
        acc=correct / n if n else 0.0,
        acc_norm=correct_norm / n if n else 0.0,
        acc_interval=wilson_interval(correct, n),
        acc_norm_interval=wilson_interval(correct_norm, n),
        predictions=list(predictions),
    )


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: str | Sequence[str] = CMQA,
    *,
    limit: int | None = None,
    data_dir: Path | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> dict[str, TaskResult]:
    """Zero-shot accuracy on each task's evaluation split (first `limit` items per task)."""
    results: dict[str, TaskResult] = {}
    for task in expand_tasks(tasks):
        items = load_task(task, "eval", data_dir, limit=limit)
        predictions = score_items(model, tokenizer, items, batch_size=batch_size, device=device)  # type: ignore[arg-type]
        results[task] = summarise(task, predictions)
    return results


def mean_accuracy(results: dict[str, TaskResult]) -> dict[str, Any]:
    """Unweighted mean over tasks of acc and of acc_norm, with a normal-approximation interval."""
    tasks = list(results.values())
    counts = [r.n for r in tasks]
    out: dict[str, Any] = {
        "tasks": [r.task for r in tasks],
        "n": sum(counts),
        "interval_method": MEAN_INTERVAL_METHOD,
    }
    for metric in ("acc", "acc_norm"):
        values = [getattr(r, metric) for r in tasks]
        out[metric] = sum(values) / len(values) if values else 0.0
        out[f"{metric}_interval"] = list(mean_interval(values, counts))
    return out
