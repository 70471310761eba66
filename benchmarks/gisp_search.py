"""The defaults search: GISP variants against the baselines on a held-out slice of WikiText-2 *validation*.

    python benchmarks/gisp_search.py --config base='{}' --config s64='{"samples": 64}' --baselines

Each ``--config NAME=JSON`` overrides PruneSettings fields of a GISP run to the benchmark's targets. Runs
share ``quality.py``'s cache, so a variant chosen here is not pruned again by the benchmark. The proxy is
the perplexity on the held-out tail of WikiText-2 validation (never in the calibration pool, never the
test split), so the defaults are not tuned on the numbers the benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from benchmarks.quality import Job, settings_for
from core.pruning_spec import Method, Objective, PruneSettings

BASELINES = ("wanda-sp", "flap", "magnitude", "gisp-oneshot")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/quality"))
    parser.add_argument("--config", action="append", default=[], metavar="NAME=JSON")
    parser.add_argument("--baselines", default="", help=f"comma list of {BASELINES}")
    parser.add_argument("--sparsities", default="0.2,0.3,0.4,0.5")
    parser.add_argument("--report", default="0.4,0.5", help="sparsities shown in the table")
    parser.add_argument("--windows", type=int, default=128, help="held-out windows of 128 tokens")
    parser.add_argument("--oneshot-samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-only", action="store_true", help="only evaluate runs already cached")
    parser.add_argument(
        "--refit", action="store_true", help="also evaluate each point with the least-squares refit"
    )
    parser.add_argument("--layout", default="nonuniform", choices=("nonuniform", "uniform"))
    return parser.parse_args(argv)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded, split, evaluator = lib.smollm2_context()
    cache = lib.MetricCache(args.out)
    base: dict[str, Any] = {"sparsities": [float(s) for s in args.sparsities.split(",")]}
    report = [float(s) for s in args.report.split(",")]
    runs: list[tuple[str, PruneSettings]] = []
    for name in filter(None, args.baselines.split(",")):
        runs.append((name, settings_for(Job(Method(name), Objective.perplexity), base, args.oneshot_samples)))
    for config in args.config:
        name, _, text = config.partition("=")
        runs.append((name, PruneSettings(**{**base, **json.loads(text or "{}")})))

    rows = []
    for name, settings in runs:
        key = lib.settings_key(settings, split.calibration, loaded)
        path = args.out / "trajectories" / f"{settings.method.value}-{settings.objective.value}-{key}.json"
        if args.eval_only and not path.is_file():
            log(f"{name}: not pruned yet, skipped")
            continue
        run = lib.pruned_run(loaded, split.calibration, settings, args.out, label=name, log=log)
        row = {"name": name, "key": run.key, "prune_s": run.prune_seconds, "ppl": {}, "refit": {}}
        metric = f"ppl_heldout_w128_n{args.windows}"
        for sparsity in report:
            for refit in (False, True) if args.refit else (False,):

                def compute(
                    refit: bool = refit, sparsity: float = sparsity, trajectory: Any = run.trajectory
                ) -> dict[str, Any]:
                    model = lib.model_at(
                        loaded, trajectory, sparsity, args.layout, refit=refit, calibration=split.calibration
                    )
                    return evaluator.perplexity(model, "heldout", args.windows)

                key = run.key + ("-refit" if refit else "")
                value = cache.get_or_compute(key, args.layout, sparsity, metric, compute)
                row["refit" if refit else "ppl"][sparsity] = value["perplexity"]
            state = lib.state_for(loaded, run.trajectory, sparsity, args.layout)
            heads = sum(len(layer.heads) for layer in state.layers)
            row.setdefault("heads", {})[sparsity] = heads
        rows.append(row)
        log(f"{name}: " + ", ".join(f"{s:.0%} {row['ppl'][s]:.1f} ({row['heads'][s]} heads)" for s in report))
    print_table(rows, report, args.refit)
    return 0


def print_table(rows: list[dict[str, Any]], report: list[float], refit: bool) -> None:
    columns = [f"held-out ppl {s:.0%} (heads)" for s in report] + (
        [f"refit {s:.0%}" for s in report] if refit else []
    )
    print("| run | " + " | ".join(columns) + " | prune s |")
    print("|---|" + "---|" * (len(columns) + 1))
    for row in rows:
        cells = [f"{row['ppl'][s]:.1f} ({row['heads'][s]})" for s in report]
        cells += [f"{row['refit'][s]:.1f}" for s in report] if refit else []
        print(f"| {row['name']} | {' | '.join(cells)} | {row['prune_s']:.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())
