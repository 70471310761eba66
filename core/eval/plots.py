"""PNG charts of a report: perplexity, mean accuracy and latency against sparsity.

Uses matplotlib's Agg backend so it runs on servers without a display; imported lazily so the rest
of `core.eval` does not pay for matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _series(report: Mapping[str, Any], getter: Any) -> tuple[list[float], list[Any]]:
    xs: list[float] = []
    ys: list[Any] = []
    for entry in report["results"]:
        value = getter(entry)
        if value is not None:
            xs.append(entry["sparsity"])
            ys.append(value)
    return xs, ys


def _latency(report: Mapping[str, Any], entry: Mapping[str, Any]) -> float | None:
    timing = report.get("timing", {}).get(f"{entry['sparsity']:g}", {})
    efficiency = timing.get("efficiency") or {}
    latency = efficiency.get("prefill_latency_ms") or {}
    return latency.get("batch_1")


def plot_report(report: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the charts the report has data for; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out_dir / name
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        written.append(path)

    xs, ys = _series(report, lambda e: (e["metrics"].get("perplexity") or {}).get("perplexity"))
    if xs:
        window = report["results"][0]["metrics"]["perplexity"]["window"]
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(xs, ys, marker="o")
        ax.set_yscale("log")
        ax.set_xlabel("sparsity")
        ax.set_ylabel(f"WikiText-2 perplexity (window {window})")
        ax.grid(True, alpha=0.3)
        save(fig, "perplexity_vs_sparsity.png")

    xs, ys = _series(report, lambda e: e["metrics"].get("mean_accuracy"))
    if xs:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for metric in ("acc", "acc_norm"):
            values = [m[metric] for m in ys]
            low = [v - m[f"{metric}_interval"][0] for v, m in zip(values, ys, strict=True)]
            high = [m[f"{metric}_interval"][1] - v for v, m in zip(values, ys, strict=True)]
            ax.errorbar(xs, values, yerr=[low, high], marker="o", capsize=3, label=metric)
        ax.set_xlabel("sparsity")
        ax.set_ylabel("mean zero-shot accuracy (95% interval)")
        ax.legend()
        ax.grid(True, alpha=0.3)
        save(fig, "accuracy_vs_sparsity.png")

    xs, ys = _series(report, lambda e: _latency(report, e))
    if xs:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.plot(xs, ys, marker="o")
        ax.set_xlabel("sparsity")
        ax.set_ylabel("prefill latency, batch 1 (ms, median)")
        ax.grid(True, alpha=0.3)
        save(fig, "latency_vs_sparsity.png")
    return written
