"""Markdown tables and the perplexity-vs-sparsity plot from ``quality.py``'s results JSON.

python benchmarks/quality_report.py out/quality/results.json   # re-render without re-running
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from core.eval.stats import mean_interval, paired_mean_difference

LAYOUT_TITLES = {
    "nonuniform": "Table 1: non-uniform layout (the subnetwork each method chose)",
    "uniform": "Table 2: uniform layout (equal sizes per layer, stock transformers classes)",
}


def _fmt_ppl(value: float) -> str:
    return f"{value:.1f}" if value < 1000 else f"{value:.3g}"


def _latency(row: dict[str, Any]) -> str:
    latency = row.get("latency")
    return f"{latency['ms']:.0f} ({latency['vs_dense']:.2f}×)" if latency else "–"


def _refit(row: dict[str, Any]) -> bool:
    return "+ refit" in row["method"]


def _best_baseline(rows: list[dict[str, Any]], target: float, refit: bool) -> float:
    """The lowest perplexity among every method but iterative GISP (one-shot GISP counts as a baseline),
    among the rows as published (``refit`` False) or among the refitted ones."""
    values = [
        r["ppl"]["perplexity"]
        for r in rows
        if r["target"] == target and r["method"].split(" ")[0] != "gisp" and _refit(r) == refit
    ]
    return min(values) if values else float("nan")


def _ratio(value: float, best: float) -> str:
    return f"{value / best:.2f}×" if best == best else "–"


def layout_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| method | target | measured sparsity | params (M) | WikiText-2 ppl | vs best published baseline "
        "| vs best refitted baseline | mean CMQA acc | prune wall time (s) | forward latency ms (vs dense) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ppl = row["ppl"]["perplexity"]
        published = _ratio(ppl, _best_baseline(rows, row["target"], refit=False))
        refitted = _ratio(ppl, _best_baseline(rows, row["target"], refit=True))
        lines.append(
            f"| {row['method']} | {row['target']:.0%} | {row['sparsity']:.4f} | {row['parameters'] / 1e6:.1f} "
            f"| {_fmt_ppl(ppl)} | {published} | {refitted} | {row['cmqa']['mean_acc']:.4f} "
            f"| {row['prune_seconds']:.0f} | {_latency(row)} |"
        )
    return lines


def _row_label(row: dict[str, Any]) -> str:
    if "name" not in row:  # results written before rows carried their name
        return row["method"].split(" (")[0]
    return row["name"] + (" + refit" if row.get("refit") else "")


def _mean_with_interval(cmqa: dict[str, Any], metric: str = "acc") -> str:
    tasks = cmqa["tasks"].values()
    low, high = mean_interval([t[metric] for t in tasks], [t["n"] for t in tasks])
    return f"{cmqa[f'mean_{metric}']:.3f} [{low:.3f}, {high:.3f}]"


def _paired(row: dict[str, Any], reference: dict[str, Any], key: str) -> str:
    """Reference minus this row on the same items, with its 95 % interval (``stats.paired_mean_difference``)."""
    if row is reference or key not in row["cmqa"] or key not in reference["cmqa"]:
        return "–"
    difference, low, high = paired_mean_difference(reference["cmqa"][key], row["cmqa"][key])
    return f"{difference:+.3f} [{low:+.3f}, {high:+.3f}]"


def margin_table(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """Accuracy of every row with its interval, and the lead of the first margin-objective GISP row with the
    same refit over it on the same items (the dense row against the refitted one, the default checkpoint)."""
    margin_rows = [r for r in rows if r["objective"] == "margin"]

    def reference_for(row: dict[str, Any]) -> dict[str, Any]:
        refit = True if row["objective"] is None else bool(row.get("refit"))
        return next(
            (r for r in margin_rows if bool(r.get("refit")) == refit), margin_rows[0] if margin_rows else row
        )

    name = _row_label(margin_rows[0]).removesuffix(" + refit") if margin_rows else "–"
    lines = [
        f"| method | objective | calibration | mean CMQA acc [95 % CI] | {name} (margin, same refit) minus this row, "
        f"acc | mean acc_norm [95 % CI] | the same, acc_norm | " + " | ".join(tasks) + " | WikiText-2 ppl |",
        "|---|---|---|---|---|---|---|" + "---|" * len(tasks) + "---|",
    ]
    for row in rows:
        reference = reference_for(row)
        calibration = {"margin": "CMQA train", "perplexity": "WikiText-2 val"}.get(row["objective"], "–")
        per_task = " | ".join(f"{row['cmqa']['tasks'][t]['acc']:.3f}" for t in tasks)
        acc_norm = _mean_with_interval(row["cmqa"], "acc_norm") if "mean_acc_norm" in row["cmqa"] else "–"
        lines.append(
            f"| {_row_label(row)} | {row['objective'] or '–'} | {calibration} | {_mean_with_interval(row['cmqa'])} "
            f"| {_paired(row, reference, 'labels')} | {acc_norm} | {_paired(row, reference, 'labels_norm')} "
            f"| {per_task} | {_fmt_ppl(row['ppl']['perplexity'])} |"
        )
    return lines


def _machine(machine: dict[str, Any]) -> str:
    cpu = machine.get("lscpu", {})
    versions = machine.get("versions", {})
    libraries = ", ".join(
        f"{name} {versions[name]}" for name in ("torch", "transformers") if name in versions
    )
    load = ", ".join(f"{value:.1f}" for value in machine.get("load_average", []))
    return (
        f"{cpu.get('Model name', machine.get('platform', '?'))}, {machine.get('cpu_count')} vCPU, "
        f"{machine.get('torch_threads')} torch thread(s), load average at start {load}; {libraries}"
    )


def markdown(results: dict[str, Any]) -> str:
    dense = results["dense"]
    tasks = list(dense["cmqa"]["tasks"])
    out = [
        f"Command: `{results['command']}`  ",
        f"Calibration: {results['calibration']['perplexity']}; margin: {results['calibration']['margin']}.  ",
        f"Evaluation: {results['evaluation']['perplexity']}; CMQA: {results['evaluation']['cmqa']}.  ",
        f"Dense: perplexity {_fmt_ppl(dense['ppl']['perplexity'])}, mean CMQA acc {dense['cmqa']['mean_acc']:.4f}, "
        f"latency {_latency(dense)}.  ",
        f"Machine: {_machine(results['machine'])}.  ",
        f"Run time {results['seconds'] / 60:.0f} min (evaluation and latency; prune times are in the tables).",
        "",
    ]
    for layout, title in LAYOUT_TITLES.items():
        if layout in results["tables"]:
            out += [f"**{title}**", "", *layout_table(results["tables"][layout]), ""]
    if "margin" in results["tables"]:
        target = results["tables"]["margin"][0]["target"]
        chance = results["evaluation"].get("cmqa_margin_chance")
        out += [f"**Table 3: CMQA accuracy at {target:.0%}, margin vs perplexity objective**", ""]
        if chance is not None:
            out += [f"Guessing uniformly scores {chance:.3f} on these items.", ""]
        out += [*margin_table(results["tables"]["margin"], tasks), ""]
    return "\n".join(out)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Perplexity against measured sparsity, one line per method, one panel per layout (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layouts = [layout for layout in LAYOUT_TITLES if layout in results["tables"]]
    if not layouts:  # table 3 alone has no perplexity curve to draw
        return path
    figure, axes = plt.subplots(1, len(layouts), figsize=(6 * len(layouts), 4.5), squeeze=False, sharey=True)
    dense = results["dense"]["ppl"]["perplexity"]
    for axis, layout in zip(axes[0], layouts):
        rows = results["tables"][layout]
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted((r["sparsity"], r["ppl"]["perplexity"]) for r in rows if r["method"] == method)
            style = "--" if "+ refit" in method else "-"
            axis.plot(
                [0.0] + [p[0] for p in points],
                [dense] + [p[1] for p in points],
                style,
                marker="o",
                label=method,
            )
        axis.set_yscale("log")
        axis.set_ylim(dense * 0.8, dense * 20)  # collapsed methods (magnitude, random) leave the top edge
        axis.set_xlabel("measured parameter sparsity (decoder layers)")
        axis.set_title(f"SmolLM2-135M-Instruct, {layout} layout")
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("WikiText-2 test perplexity (window 128)")
    axes[0][0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


if __name__ == "__main__":
    data = json.loads(Path(sys.argv[1]).read_text())
    print(markdown(data))
