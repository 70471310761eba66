"""One versioned JSON evaluation report per pruning run, dense baseline included.

Layout (``schema_version`` "1.0")::

    {
      "schema_version": "1.0",
      "kind": "gisp-eval-report",
      "model": {...},                     # what was evaluated (name, source)
      "settings": {...},                  # tasks, limits, windows, seeds: everything that fixes the numbers
      "seeds": {...},
      "dataset_fingerprints": {...},      # sha256 of every data file read, relative to the data folder
      "versions": {"python", "torch", "transformers"},
      "dense": {"metrics": {...}},        # the sparsity-0 entry, repeated for convenience (or null)
      "results": [                        # one entry per sparsity, ascending
        {"sparsity": 0.5, "metrics": {...}, "vs_dense": {...}}
      ],                                  # vs_dense: ratios, deltas, and the mean accuracy's paired interval
      "timing": {"<sparsity>": {...}},    # wall times, latency, throughput, memory: never compared
      "run": {"created_at": ...}
    }

Every accuracy in ``metrics`` carries its item count ``n`` and a 95% interval. The mean accuracy's
delta against dense also carries one (``mean_accuracy.acc_delta_interval``): both models answered the
same items, so the paired interval shows what pruning lost far more sharply than two separate ones. ``metrics`` is
deterministic on CPU (fixed seeds, fixed batches, deterministic kernels), so two runs of the same
evaluation give identical ``comparable(report)``; anything measured with a clock lives under
``timing`` or ``run``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from core.data.paths import fingerprint
from core.engine.versions import library_versions
from core.eval.stats import paired_mean_difference

SCHEMA_VERSION = "1.0"
REPORT_KIND = "gisp-eval-report"
NON_DETERMINISTIC_KEYS = ("timing", "run")


def dataset_fingerprints(paths: Iterable[Path], data_dir: Path | None) -> dict[str, str]:
    """sha256 of each distinct data file, keyed by its path relative to the data folder."""
    unique = sorted({Path(os.path.abspath(p)) for p in paths if Path(p).is_file()})
    return fingerprint(unique, data_dir)


def _accuracy_summary(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flat name -> value of the headline numbers, for the deltas against dense."""
    flat: dict[str, float] = {}
    ppl = metrics.get("perplexity")
    if ppl:
        flat["perplexity"] = ppl["perplexity"]
    for task, result in (metrics.get("multiple_choice") or {}).items():
        flat[f"{task}.acc"] = result["acc"]
        flat[f"{task}.acc_norm"] = result["acc_norm"]
    mean = metrics.get("mean_accuracy")
    if mean:
        flat["mean_accuracy.acc"] = mean["acc"]
        flat["mean_accuracy.acc_norm"] = mean["acc_norm"]
    size = metrics.get("efficiency")
    if size:
        flat["parameters"] = size["parameters"]
        flat["flops_per_token"] = size["flops_per_token"]
    gsm = metrics.get("gsm8k")
    if gsm:
        flat["gsm8k.strict_match"] = gsm["strict_match"]["accuracy"]
        flat["gsm8k.flexible_extract"] = gsm["flexible_extract"]["accuracy"]
    return flat


def versus_dense(metrics: Mapping[str, Any], dense: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Differences from the dense model: ratio for perplexity, difference for accuracies."""
    if dense is None:
        return None
    mine, base = _accuracy_summary(metrics), _accuracy_summary(dense)
    out: dict[str, Any] = {}
    for key, value in mine.items():
        if key not in base:
            continue
        if key in ("perplexity", "parameters", "flops_per_token"):
            out[f"{key}_ratio"] = value / base[key] if base[key] else None
        else:
            out[f"{key}_delta"] = value - base[key]
    for metric, chosen in (("acc", "chosen"), ("acc_norm", "chosen_norm")):
        interval = _paired_interval(metrics, dense, chosen)
        if interval is not None:
            out[f"mean_accuracy.{metric}_delta_interval"] = interval
    return out


def _correct(metrics: Mapping[str, Any], chosen: str) -> dict[str, tuple[list[str], list[bool]]]:
    tasks = metrics.get("multiple_choice") or {}
    return {
        task: (
            list(r["items"]["ids"]),
            [c == y for c, y in zip(r["items"][chosen], r["items"]["label"], strict=True)],
        )
        for task, r in tasks.items()
        if "items" in r
    }


def _paired_interval(metrics: Mapping[str, Any], dense: Mapping[str, Any], chosen: str) -> list[float] | None:
    """95 % interval of (pruned - dense) mean accuracy over the same items; None unless the items match."""
    mine, base = _correct(metrics, chosen), _correct(dense, chosen)
    if not mine or set(mine) != set(base) or any(mine[t][0] != base[t][0] for t in mine):
        return None
    _, low, high = paired_mean_difference(
        {t: v[1] for t, v in mine.items()}, {t: v[1] for t, v in base.items()}
    )
    return [low, high]


def build_report(
    evaluations: Mapping[float, Mapping[str, Any]],
    *,
    model: Mapping[str, Any] | None = None,
    seeds: Mapping[str, int] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the report from ``{sparsity: evaluate_model(...) output}``.

    The settings, fingerprints and versions must agree across sparsities (they describe one
    protocol); a mismatch raises rather than silently mixing protocols in one table.
    """
    if not evaluations:
        raise ValueError("no evaluations to report")
    ordered = sorted(evaluations.items(), key=lambda kv: float(kv[0]))
    settings = ordered[0][1].get("settings", {})
    prints: dict[str, str] = {}
    for sparsity, evaluation in ordered:
        if evaluation.get("settings", {}) != settings:
            raise ValueError(f"sparsity {sparsity}: evaluation settings differ from the others")
        prints.update(evaluation.get("dataset_fingerprints", {}))
    dense_eval = dict(ordered[0][1]) if float(ordered[0][0]) == 0.0 else None
    dense_metrics = dense_eval["metrics"] if dense_eval else None
    results = [
        {
            "sparsity": float(sparsity),
            "metrics": evaluation["metrics"],
            "vs_dense": versus_dense(evaluation["metrics"], dense_metrics),
        }
        for sparsity, evaluation in ordered
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": REPORT_KIND,
        "model": dict(model or {}),
        "settings": settings,
        "seeds": dict(seeds or {"evaluation": settings.get("seed", 0)}),
        "dataset_fingerprints": dict(sorted(prints.items())),
        "versions": library_versions(),
        "dense": {"metrics": dense_metrics} if dense_metrics is not None else None,
        "results": results,
        "extra": dict(extra or {}),
        "timing": {f"{float(s):g}": evaluation.get("timing", {}) for s, evaluation in ordered},
        "run": {"created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")},
    }


def evaluations_from_report(report: Mapping[str, Any]) -> dict[float, dict[str, Any]]:
    """Turn a report back into ``{sparsity: evaluation}`` so another run can be merged with it."""
    timing = report.get("timing", {})
    return {
        float(entry["sparsity"]): {
            "metrics": entry["metrics"],
            "timing": timing.get(f"{float(entry['sparsity']):g}", {}),
            "settings": report["settings"],
            "dataset_fingerprints": report["dataset_fingerprints"],
        }
        for entry in report["results"]
    }


def comparable(report: Mapping[str, Any]) -> dict[str, Any]:
    """The report without its clock-dependent parts: what two identical runs must agree on."""
    return {key: value for key, value in report.items() if key not in NON_DETERMINISTIC_KEYS}


def write_report(report: Mapping[str, Any], path: Path) -> Path:
    """Write stable JSON (sorted keys) so reports diff cleanly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def read_report(path: Path) -> dict[str, Any]:
    """Read a report, refusing schema versions this code does not understand."""
    report = json.loads(Path(path).read_text(encoding="utf-8"))
    if report.get("kind") != REPORT_KIND:
        raise ValueError(f"{path}: not an evaluation report")
    major = str(report.get("schema_version", "")).split(".")[0]
    if major != SCHEMA_VERSION.split(".")[0]:
        raise ValueError(f"{path}: schema_version {report.get('schema_version')} is not {SCHEMA_VERSION}")
    return report
