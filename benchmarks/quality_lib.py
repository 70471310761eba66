"""Shared pieces of the quality benchmark and the defaults search: data splits, caches, evaluation.

Pruning SmolLM2 on this CPU takes minutes to an hour per method, evaluation minutes per model, so both are
cached on disk (``out/quality`` by default, gitignored): trajectories by the hash of everything that fixes
them, metrics by (trajectory, layout, sparsity, metric settings). Re-running a table re-prunes nothing.

Calibration text is WikiText-2 *validation* without its last articles, which are held out: the defaults
search tunes on their perplexity, so the benchmark's WikiText-2 *test* numbers are never tuned on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.data.calibration import CalibrationItem, fingerprint, load_calibration_items
from core.data.tasks import load_task
from core.data.text import wikitext2_text
from core.engine.architectures import family_of
from core.engine.loading import LoadedModel
from core.engine.materialize import checkpoint_model, stock_uniform_state
from core.engine.pruner import prune
from core.engine.structures import PruningState
from core.engine.trajectory import Trajectory
from core.engine.versions import library_versions
from core.eval.efficiency import measure_speed
from core.eval.multiple_choice import expand_tasks, mean_accuracy, score_items, summarise
from core.eval.perplexity import perplexity_of_ids, tokenize_text
from core.pruning_spec import Objective, PruneSettings

WINDOW = 128
HOLDOUT_TOKENS = 16_384  # 128 windows of 128 tokens at the end of WikiText-2 validation
# New PruneSettings fields, with the value that reproduces the engine as it was before they existed:
# dropped from cache keys so trajectories pruned before a field was added stay valid.
NEUTRAL_SETTINGS: dict[str, Any] = {"bias_compensation": False, "score": "taylor"}
# read only when a checkpoint is built, so runs that differ only here share one trajectory
CHECKPOINT_SETTINGS = ("reconstruction", "reconstruction_samples")


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class WikiSplit:
    """WikiText-2 validation cut at an article boundary: calibration before it, held-out text after."""

    calibration: list[CalibrationItem]
    heldout_text: str
    heldout_articles: int


def wikitext_split(tokenizer: Any, holdout_tokens: int = HOLDOUT_TOKENS) -> WikiSplit:
    """Hold out the smallest tail of whole validation articles that holds ``holdout_tokens`` tokens."""
    items = load_calibration_items("wikitext2", Objective.perplexity)
    count, tokens = 0, 0
    while tokens < holdout_tokens + WINDOW and count < len(items) - 1:
        count += 1
        tokens += len(tokenizer(items[-count].text, add_special_tokens=False)["input_ids"])
    heldout = "\n\n".join(item.text for item in items[-count:])  # type: ignore[union-attr]
    return WikiSplit(list(items[:-count]), heldout, count)


def smollm2_context() -> tuple[LoadedModel, WikiSplit, Evaluator]:
    """The benchmarks' model, its WikiText-2 calibration / held-out split and an evaluator over both."""
    from core.assets import smollm2_model_dir
    from core.engine.loading import load_model

    loaded = load_model(smollm2_model_dir())
    split = wikitext_split(loaded.tokenizer)
    return loaded, split, Evaluator(loaded, heldout_text=split.heldout_text)


def cmqa_calibration(limit: int, seed: int = 0) -> list[CalibrationItem]:
    """The margin objective's calibration: a seeded mix of the CMQA train splits (never evaluated on)."""
    return load_calibration_items("cmqa", Objective.margin, limit=limit, seed=seed)


class Evaluator:
    """Tokenised evaluation data, loaded once per process; every metric is cached by its settings."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        heldout_text: str | None = None,
        cmqa_tasks: str = "cmqa",
        batch_size: int = 16,
    ) -> None:
        self.loaded = loaded
        self.batch_size = batch_size
        self._test_ids = tokenize_text(loaded.tokenizer, wikitext2_text("test"))
        self._heldout_ids = tokenize_text(loaded.tokenizer, heldout_text) if heldout_text else None
        self.tasks = expand_tasks(cmqa_tasks)
        self._task_items: dict[tuple[str, int | None], list] = {}

    @property
    def test_windows(self) -> int:
        return self._test_ids.numel() // WINDOW

    def perplexity(self, model: torch.nn.Module, split: str, windows: int | None) -> dict[str, Any]:
        """WikiText-2 perplexity over the first ``windows`` windows (all of them for None)."""
        ids = self._test_ids if split == "test" else self._heldout_ids
        if ids is None:
            raise ValueError("no held-out text was given to the evaluator")
        if windows:
            ids = ids[: windows * WINDOW]
        result = perplexity_of_ids(model, ids, window=WINDOW, batch_size=8)
        return {
            "perplexity": result.perplexity,
            "windows": result.n_windows,
            "tokens": result.n_predicted_tokens,
        }

    def _items(self, task: str, limit: int | None) -> list:
        key = (task, limit)
        if key not in self._task_items:
            self._task_items[key] = load_task(task, "eval", limit=limit)
        return self._task_items[key]

    def cmqa(self, model: torch.nn.Module, limit: int | None) -> dict[str, Any]:
        """Zero-shot accuracy on the first ``limit`` evaluation items of each CMQA task, and their mean."""
        results = {}
        for task in self.tasks:
            predictions = score_items(
                model, self.loaded.tokenizer, self._items(task, limit), batch_size=self.batch_size
            )
            results[task] = summarise(task, predictions)
        mean = mean_accuracy(results)
        return {
            "mean_acc": mean["acc"],
            "mean_acc_norm": mean["acc_norm"],
            "tasks": {t: {"acc": r.acc, "acc_norm": r.acc_norm, "n": r.n} for t, r in results.items()},
            "labels": {t: [p.chosen == p.label for p in r.predictions] for t, r in results.items()},
            "labels_norm": {t: [p.chosen_norm == p.label for p in r.predictions] for t, r in results.items()},
        }

    def chance(self, limit: int | None) -> float:
        """The mean accuracy of guessing uniformly among each item's choices, on the items ``cmqa`` scores."""
        per_task = [
            sum(1 / len(item.choices) for item in items) / len(items)
            for items in (self._items(task, limit) for task in self.tasks)
        ]
        return sum(per_task) / len(per_task)

    @staticmethod
    def latency(model: torch.nn.Module, repeats: int) -> dict[str, Any]:
        """Median forward latency, batch 1 x 128 tokens (prefill, no cache), after a warm-up."""
        speed = measure_speed(model, seq_len=WINDOW, batch_sizes=(1,), repeats=repeats, decode_steps=0)
        return {"ms": speed.prefill_latency_ms["batch_1"], "repeats": repeats}


# --------------------------------------------------------------------------- caches


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(path)


def settings_key(settings: PruneSettings, items: Sequence[CalibrationItem], loaded: LoadedModel) -> str:
    """What fixes a trajectory: the settings (new fields at their neutral value left out), data, weights."""
    dumped = settings.model_dump(mode="json")
    for name in CHECKPOINT_SETTINGS:
        dumped.pop(name, None)
    for name, neutral in NEUTRAL_SETTINGS.items():
        if dumped.get(name) == neutral:
            dumped.pop(name, None)
    if dumped.get("method") in ("flap", "wanda-sp"):  # these names ran the engine's earlier readings before:
        dumped["official"] = (
            True  # a cached trajectory of those (now flap-headsum, wanda-sp-dense) must not match
        )
    return _digest([dumped, fingerprint(items), loaded.identity.get("weights_sha256")])[:16]


@dataclass
class CachedRun:
    key: str
    trajectory: Trajectory
    prune_seconds: float
    threads: int
    label: str


def pruned_run(
    loaded: LoadedModel,
    items: Sequence[CalibrationItem],
    settings: PruneSettings,
    cache: Path,
    *,
    label: str = "",
    log: Callable[[str], None] = print,
) -> CachedRun:
    """The trajectory for ``settings`` from the cache, pruning (and timing) it first if it is missing."""
    key = settings_key(settings, items, loaded)
    path = cache / "trajectories" / f"{settings.method.value}-{settings.objective.value}-{key}.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return CachedRun(
            key, Trajectory.from_dict(data["trajectory"]), data["prune_seconds"], data["threads"], label
        )
    log(f"pruning {label or settings.method.value} ({key}) ...")
    started = time.perf_counter()

    def on_step(record: Any, _trajectory: Trajectory) -> None:
        log(
            f"  step {record.index}/{record.total_steps} sparsity {record.sparsity:.3f} "
            f"loss {record.loss:.4f} ({record.seconds:.0f} s)"
        )

    trajectory = prune(loaded, items, settings, on_step=on_step)
    seconds = time.perf_counter() - started
    log(f"pruned {label or settings.method.value} in {seconds:.0f} s")
    _write_atomic(
        path,
        {
            "label": label,
            "settings": settings.model_dump(mode="json"),
            "prune_seconds": seconds,
            "threads": torch.get_num_threads(),
            "trajectory": trajectory.to_dict(),
        },
    )
    return CachedRun(key, trajectory, seconds, torch.get_num_threads(), label)


@dataclass
class MetricCache:
    """One JSON file per (trajectory, layout, sparsity) holding every metric computed on that model."""

    root: Path
    _memory: dict[Path, dict[str, Any]] = field(default_factory=dict)

    def path(self, run_key: str, layout: str, sparsity: float) -> Path:
        return self.root / "metrics" / f"{run_key}-{layout}-{sparsity:.4f}.json"

    def get_or_compute(
        self, run_key: str, layout: str, sparsity: float, metric: str, compute: Callable[[], Any]
    ) -> Any:
        path = self.path(run_key, layout, sparsity)
        if path not in self._memory:
            self._memory[path] = json.loads(path.read_text()) if path.is_file() else {}
        stored = self._memory[path]
        if metric not in stored and path.is_file():  # another process may have added it since
            stored.update(json.loads(path.read_text()))
        if metric not in stored:
            value = compute()
            on_disk = json.loads(path.read_text()) if path.is_file() else {}
            stored.update(
                {**on_disk, metric: value}
            )  # merge: processes sharing the cache keep each other's metrics
            _write_atomic(path, stored)
        return stored[metric]


def state_for(loaded: LoadedModel, trajectory: Trajectory, sparsity: float, layout: str) -> PruningState:
    if layout == "uniform":
        return stock_uniform_state(loaded, trajectory, sparsity)
    return trajectory.state_at(sparsity)


def model_at(
    loaded: LoadedModel,
    trajectory: Trajectory | None,
    sparsity: float,
    layout: str,
    *,
    refit: bool = False,
    calibration: Sequence[CalibrationItem] | None = None,
) -> torch.nn.Module:
    """The dense base model at sparsity 0, else the checkpoint model of ``layout`` at ``sparsity``, with or
    without the least-squares refit (on ``calibration``, the run's items) whatever the run itself asked for."""
    if trajectory is None or sparsity == 0.0:
        return loaded.model
    settings = trajectory.settings.model_copy(update={"reconstruction": refit})
    variant = dataclasses.replace(trajectory, settings=settings)
    state = state_for(loaded, variant, sparsity, layout)
    biases = layout != "uniform" or family_of(loaded.model.config).stock_output_biases
    return checkpoint_model(loaded, variant, state, calibration, output_biases=biases)


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    """What the timings were measured on: CPU model and count, torch threads, load, versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "versions": library_versions(),
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "Hypervisor vendor")
        info["lscpu"] = {
            k.strip(): v.strip()
            for k, _, v in (line.partition(":") for line in lscpu.splitlines())
            if k.strip() in wanted
        }
    except (OSError, subprocess.CalledProcessError):
        info["lscpu"] = {}
    return info


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
