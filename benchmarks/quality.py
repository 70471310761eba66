"""Quality of every pruning method on SmolLM2-135M-Instruct (CPU), at equal measured parameter sparsity.

    python benchmarks/quality.py                                   # the full benchmark (hours on 2 cores)
    python benchmarks/quality.py --ppl-windows 16 --cmqa-limit 10 --methods wanda-sp,magnitude \
        --latency-repeats 2 --no-margin                            # a quick run (minutes), same code

Three tables, written as Markdown and JSON under ``--out`` (gitignored) plus one committed plot:

1. every method (each run once to the largest target, all targets on its trajectory) in the non-uniform
   layout: WikiText-2 test perplexity (window 128), mean CMQA accuracy, prune wall time, forward latency;
2. the same subnetworks restricted to the ``uniform`` layout that stock transformers loads;
3. at ``--margin-sparsity``: GISP with the margin objective calibrated on CMQA train splits, against the
   baselines calibrated on the same items and against GISP with the perplexity objective.

Every method sees the same calibration: WikiText-2 validation without its held-out tail (see
``quality_lib``); one-shot data-driven methods read ``--oneshot-samples`` windows in their single step. Runs are
cached under ``--out``; a second invocation only evaluates what is missing. Latencies are measured at the
end, all models interleaved round-robin in one process, so they share the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from core.pruning_spec import METHODS, ONE_SHOT_METHODS, Method, Objective, PruneSettings, Score

ALL_METHODS = ("gisp", "gisp-oneshot", "wanda-sp", "flap", "magnitude", "random")
DATA_FREE = frozenset({Method.magnitude, Method.random})
MARGIN_METHODS = ("gisp", "gisp-oneshot", "wanda-sp", "flap")
REFIT_METHODS = ("gisp", "gisp-oneshot", "wanda-sp", "flap")
PLOT = Path(__file__).resolve().parent / "quality_perplexity.png"


@dataclass(frozen=True)
class Job:
    """One pruning run: a method, its objective and the calibration it reads."""

    method: Method
    objective: Objective
    refit: bool = False  # checkpoints refitted by least squares (the engine's default for every method)
    score: Score = Score.taylor  # gisp / gisp-oneshot only

    @classmethod
    def parse(cls, spec: str, objective: Objective, refit: bool) -> Job:
        """``gisp`` or ``gisp:fisher``: a method, optionally with a score other than the default."""
        method, _, score = spec.partition(":")
        return cls(Method(method), objective, refit, Score(score) if score else Score.taylor)

    @property
    def name(self) -> str:
        """The subnetwork's name: one per trajectory, shared by the row as published and the refitted one."""
        return self.method.value + ("" if self.score is Score.taylor else f" ({self.score.value})")

    @property
    def label(self) -> str:
        suffix = "" if self.objective is Objective.perplexity else f" ({self.objective.value}, CMQA)"
        return f"{self.name}{' + refit' if self.refit else ''}{suffix}"

    @property
    def metric_key(self) -> str:
        return "-refit" if self.refit else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/quality"))
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help="rows as each method is published; METHOD:SCORE picks a gradient method's score (gisp:fisher)",
    )
    parser.add_argument(
        "--refit-methods",
        default=",".join(REFIT_METHODS),
        help="rows with the least-squares refit of every checkpoint (reconstruction), the engine's default",
    )
    parser.add_argument("--sparsities", default="0.2,0.3,0.4,0.5")
    parser.add_argument("--ppl-windows", type=int, default=256, help="first N test windows of 128; 0 = all")
    parser.add_argument("--cmqa-limit", type=int, default=30, help="first N eval items per task; 0 = all")
    parser.add_argument("--margin-cmqa-limit", type=int, default=100, help="the same for table 3")
    parser.add_argument("--latency-repeats", type=int, default=5, help="0 skips latency")
    parser.add_argument("--layouts", default="nonuniform,uniform")
    parser.add_argument(
        "--uniform-methods",
        default="gisp,gisp-oneshot,wanda-sp,flap",
        help="methods of table 2 (magnitude and random collapse in table 1 already)",
    )
    parser.add_argument("--no-margin", action="store_true", help="skip table 3")
    parser.add_argument("--margin-sparsity", type=float, default=0.4)
    parser.add_argument("--margin-items", type=int, default=4000, help="CMQA train items in the pool")
    parser.add_argument(
        "--oneshot-samples",
        type=int,
        default=256,
        help="calibration windows of the one-shot data-driven methods",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy box)")
    parser.add_argument("--stage", choices=("prune", "eval", "all"), default="all")
    parser.add_argument("--plot", type=Path, default=PLOT)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a PruneSettings field for every run, e.g. --set steps=40",
    )
    return parser.parse_args(argv)


def base_settings(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {}
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        overrides[name] = json.loads(value)
    sparsities = [float(s) for s in args.sparsities.split(",")]
    return {"sparsities": sparsities, **overrides}


def settings_for(job: Job, base: dict[str, Any], oneshot_samples: int) -> PruneSettings:
    """The job's settings; one-shot data-driven methods read ``oneshot_samples`` sequences in their one step."""
    values = dict(base, method=job.method, objective=job.objective, reconstruction=job.refit)
    if METHODS[job.method].takes_score:
        values["score"] = job.score
    if job.method in ONE_SHOT_METHODS:
        values.pop("steps", None)
        if job.method not in DATA_FREE:
            values["samples"] = oneshot_samples
    return PruneSettings(**values)


class Benchmark:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cache = lib.MetricCache(args.out)
        self.loaded, self.split, self.evaluator = lib.smollm2_context()
        self.base = base_settings(args)
        self._margin_items: list | None = None
        self.ppl_windows = args.ppl_windows or None
        self.cmqa_limit = args.cmqa_limit or None

    def log(self, message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    def items_for(self, job: Job) -> list:
        if job.objective is Objective.perplexity:
            return self.split.calibration
        if self._margin_items is None:
            self._margin_items = lib.cmqa_calibration(self.args.margin_items)
        return self._margin_items

    def run(self, job: Job) -> lib.CachedRun:
        settings = settings_for(job, self.base, self.args.oneshot_samples)
        return lib.pruned_run(
            self.loaded, self.items_for(job), settings, self.args.out, label=job.label, log=self.log
        )

    # ------------------------------------------------------------------ metrics

    def metrics(
        self, job: Job, run: lib.CachedRun | None, sparsity: float, layout: str, cmqa_limit: int | None = None
    ) -> dict[str, Any]:
        """Perplexity and CMQA accuracy of one model (cached), with its measured sparsity and size."""
        key = run.key + job.metric_key if run is not None else "dense"
        model = None

        def get_model() -> torch.nn.Module:
            nonlocal model
            if model is None:
                model = lib.model_at(
                    self.loaded,
                    run.trajectory if run else None,
                    sparsity,
                    layout,
                    refit=job.refit,
                    calibration=self.items_for(job),
                )
            return model

        def cached(metric: str, compute: Any) -> Any:
            return self.cache.get_or_compute(key, layout, sparsity, metric, compute)

        windows = self.ppl_windows or 0
        result: dict[str, Any] = {
            "ppl": cached(
                f"ppl_test_w128_n{windows}",
                lambda: self.evaluator.perplexity(get_model(), "test", self.ppl_windows),
            ),
        }
        limit = cmqa_limit or self.cmqa_limit
        result["cmqa"] = cached(f"cmqa_l{limit or 0}", lambda: self.evaluator.cmqa(get_model(), limit))
        if run is None or sparsity == 0.0:
            result["sparsity"] = 0.0
            result["parameters"] = sum(p.numel() for p in self.loaded.model.parameters())
        else:
            state = lib.state_for(self.loaded, run.trajectory, sparsity, layout)
            g = run.trajectory.geometry
            result["sparsity"] = state.sparsity()
            result["parameters"] = run.trajectory.dense_parameters - (
                g.dense_decoder_params - state.decoder_params()
            )
        return result

    def latencies(
        self, models: list[tuple[str, lib.CachedRun | None, float, str]]
    ) -> dict[str, dict[str, Any]]:
        """Round-robin over every model so slow and busy moments of the machine hit all of them alike.

        Measured on the models as published: the refit changes weights and adds biases, not shapes.
        """
        times: dict[str, list[float]] = {name: [] for name, *_ in models}
        for repeat in range(self.args.latency_repeats):
            self.log(f"latency round {repeat + 1}/{self.args.latency_repeats}")
            for name, run, sparsity, layout in models:
                model = lib.model_at(self.loaded, run.trajectory if run else None, sparsity, layout)
                times[name].append(lib.Evaluator.latency(model, repeats=1)["ms"])
                del model
        dense = lib.median(times["dense"])
        return {
            name: {"ms": lib.median(values), "vs_dense": lib.median(values) / dense, "samples": values}
            for name, values in times.items()
        }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    bench = Benchmark(args)
    layouts = [layout for layout in args.layouts.split(",") if layout]  # "" = table 3 only
    sparsities = bench.base["sparsities"]
    variants = [(m, False) for m in args.methods.split(",") if m]
    variants += [(m, True) for m in args.refit_methods.split(",") if m]
    jobs = [Job.parse(m, Objective.perplexity, refit) for m, refit in variants]
    margin_jobs = (
        []
        if args.no_margin
        else [
            Job.parse(m, Objective.margin, refit)
            for m, refit in variants
            if m.partition(":")[0] in MARGIN_METHODS
        ]
    )
    runs = {job: bench.run(job) for job in jobs + margin_jobs}
    if args.stage == "prune":
        return 0

    results: dict[str, Any] = {
        "command": " ".join(sys.argv),
        "machine": lib.machine_info(),
        "settings": {
            job.label: settings_for(job, bench.base, args.oneshot_samples).model_dump(mode="json")
            for job in runs
        },
        "calibration": {
            "perplexity": f"WikiText-2 validation without its last {bench.split.heldout_articles} articles "
            f"({len(bench.split.calibration)} articles)",
            "margin": f"CMQA train splits, seeded mix of {args.margin_items} items",
        },
        "evaluation": {
            "perplexity": f"WikiText-2 raw test, window 128, first {bench.ppl_windows or bench.evaluator.test_windows} "
            f"of {bench.evaluator.test_windows} windows",
            "cmqa": f"first {bench.cmqa_limit or 'all'} eval items per task "
            f"(table 3: {args.margin_cmqa_limit or 'all'}), {', '.join(bench.evaluator.tasks)}",
        },
        "dense": bench.metrics(Job(Method.gisp, Objective.perplexity), None, 0.0, "nonuniform"),
        "tables": {},
    }
    uniform_methods = set(args.uniform_methods.split(","))
    layout_jobs = {
        layout: [j for j in jobs if layout != "uniform" or j.method.value in uniform_methods]
        for layout in layouts
    }
    for layout in layouts:
        rows = []
        for job in layout_jobs[layout]:
            run = runs[job]
            for sparsity in sparsities:
                bench.log(f"evaluating {job.label} {layout} {sparsity}")
                rows.append(
                    {
                        "method": job.label,
                        "name": job.name,
                        "target": sparsity,
                        "layout": layout,
                        "prune_seconds": run.prune_seconds,
                        **bench.metrics(job, run, sparsity, layout),
                    }
                )
        results["tables"][layout] = rows
    if margin_jobs:
        results["tables"]["margin"] = margin_table(bench, runs, jobs, margin_jobs)
        results["evaluation"]["cmqa_margin_chance"] = bench.evaluator.chance(args.margin_cmqa_limit or None)
    if args.latency_repeats:
        measured = {job.name: job for layout in layouts for job in layout_jobs[layout]}  # one per subnetwork
        models = [("dense", None, 0.0, "nonuniform")] + [
            (f"{name}|{layout}|{s}", runs[job], s, layout)
            for layout in layouts
            for name, job in measured.items()
            if job in layout_jobs[layout]
            for s in sparsities
        ]
        latency = bench.latencies(models)
        results["latency"] = latency
        for layout in layouts:
            for row in results["tables"][layout]:
                row["latency"] = latency.get(f"{row.get('name', row['method'])}|{layout}|{row['target']}")
        results["dense"]["latency"] = latency["dense"]
    results["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    from benchmarks.quality_report import markdown, plot

    text = markdown(results)
    (args.out / "tables.md").write_text(text)
    print(text)
    if args.plot:
        plot(results, args.plot)
    bench.log(f"done in {results['seconds']:.0f} s")
    return 0


def margin_table(
    bench: Benchmark, runs: dict, jobs: list[Job], margin_jobs: list[Job]
) -> list[dict[str, Any]]:
    """Mean CMQA accuracy at one sparsity: margin-calibrated runs, then the perplexity-calibrated ones, then
    the dense model on the same items (the headroom above chance that pruning can keep)."""
    sparsity = bench.args.margin_sparsity
    limit = bench.args.margin_cmqa_limit or None
    rows = []
    for job in margin_jobs + jobs:
        bench.log(f"evaluating {job.label} margin table {sparsity}")
        rows.append(
            {
                "method": job.label,
                "name": job.name,
                "refit": job.refit,
                "objective": job.objective.value,
                "target": sparsity,
                "prune_seconds": runs[job].prune_seconds,
                **bench.metrics(job, runs[job], sparsity, "nonuniform", limit),
            }
        )
    dense = Job(Method.gisp, Objective.perplexity)
    rows.append(
        {
            "method": "dense",
            "name": "dense",
            "refit": False,
            "objective": None,
            "target": 0.0,
            "prune_seconds": 0.0,
            **bench.metrics(dense, None, 0.0, "nonuniform", limit),
        }
    )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
