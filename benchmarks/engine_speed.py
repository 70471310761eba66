"""Engine speed and memory on SmolLM2-135M-Instruct, each figure a ratio measured side by side in one run.

    python benchmarks/engine_speed.py --samples 32 --seq-len 128 --repeats 3 --run-steps 10

1. one GISP step (gradients, scores, ranking, slicing) vs a plain forward+backward over the same batch;
2. peak memory of each (separate processes, peak resident set size above the loaded model's);
3. a whole run to 50 % that slices as it goes vs one that only masks;
4. forward latency of the 50 % checkpoint vs the dense model (batch 1 × 128 tokens);
5. (``--only scores``) a GISP step with each score (``--scores``) against one with the default Taylor score.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _setup(args: argparse.Namespace):
    from core.assets import smollm2_model_dir
    from core.data.calibration import load_calibration_items
    from core.engine.loading import load_model
    from core.engine.objectives import CalibrationPool
    from core.pruning_spec import Objective, PruneSettings

    torch.manual_seed(0)
    loaded = load_model(smollm2_model_dir())
    settings = PruneSettings(
        sparsities=[0.5],
        steps=args.run_steps,
        samples=args.samples,
        seq_len=args.seq_len,
        bias_compensation=False,
    )
    items = load_calibration_items("wikitext2", Objective.perplexity)
    pool = CalibrationPool(items, loaded.tokenizer, settings, args.batch_size)
    return loaded, settings, items, pool


def measure_plain(args: argparse.Namespace) -> dict:
    """What any fine-tuning loop does: forward with labels, backward, every parameter trainable."""
    loaded, _, _, pool = _setup(args)
    model = loaded.model
    model.requires_grad_(True)
    baseline = _peak_rss_mb()
    times = []
    for step in range(args.repeats):
        batches = pool.batches(step)
        started = time.perf_counter()
        model.zero_grad(set_to_none=True)
        for batch in batches:
            out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
            out.loss.backward()
        times.append(time.perf_counter() - started)
    return {"seconds": times, "peak_mb_above_model": _peak_rss_mb() - baseline}


def measure_gisp_step(args: argparse.Namespace) -> dict:
    """One full GISP step on the working model: gradients, Taylor scores, global ranking, slicing."""
    from core.engine.architectures import geometry_of
    from core.engine.methods import GRADIENT_SCORERS, StepInput
    from core.engine.ranking import ScoreTable, select
    from core.engine.schedule import protected_layers
    from core.engine.structures import PruningState
    from core.engine.views import SLICED
    from core.pruning_spec import Score

    loaded, settings, _, pool = _setup(args)
    geometry = geometry_of(loaded.model.config)
    protected = protected_layers(settings, geometry.num_layers)
    eligible = [i for i in range(geometry.num_layers) if i not in protected]
    working = SLICED.working_model(loaded.model)
    scorer = GRADIENT_SCORERS[Score(args.score)]()
    scorer.prepare(working)
    state = PruningState.dense(geometry)
    baseline = _peak_rss_mb()
    times = []
    for step in range(args.repeats):
        started = time.perf_counter()
        scored = scorer.score(
            StepInput(working, state, geometry, settings, pool.batches(step), protected, None, SLICED)
        )
        ranked = ScoreTable.from_layer_scores(state, scored.scores, geometry, True)
        new_state, _, _ = select(state, ranked, eligible, state.sparsity() + 0.005)
        SLICED.remove(working, state, new_state)
        state = new_state
        times.append(time.perf_counter() - started)
    return {"seconds": times, "peak_mb_above_model": _peak_rss_mb() - baseline}


def measure_run(args: argparse.Namespace, physical: bool) -> dict:
    from core.engine.masking import MASKED
    from core.engine.pruner import prune
    from core.engine.views import SLICED

    loaded, settings, items, _ = _setup(args)
    started = time.perf_counter()
    view = SLICED if physical else MASKED
    trajectory = prune(loaded, items, settings, batch_size=args.batch_size, view=view)
    return {"seconds": time.perf_counter() - started, "sparsity": trajectory.steps[-1].sparsity}


def measure_latency(args: argparse.Namespace) -> dict:
    from core.engine.materialize import pruned_model
    from core.engine.pruner import prune
    from core.pruning_spec import PruneSettings

    loaded, _, items, _ = _setup(args)
    settings = PruneSettings(sparsities=[0.5], steps=4, samples=8, seq_len=args.seq_len)
    trajectory = prune(loaded, items, settings)
    pruned = pruned_model(loaded, trajectory, trajectory.state_at(0.5)).eval()
    ids = torch.randint(0, loaded.model.config.vocab_size, (1, 128))

    @torch.no_grad()
    def once(model: torch.nn.Module) -> float:
        started = time.perf_counter()
        model(input_ids=ids, use_cache=False)
        return time.perf_counter() - started

    for model in (loaded.model, pruned):
        once(model), once(model)  # warm-up
    dense_times, pruned_times = [], []
    for _ in range(args.latency_repeats):  # alternate call by call, so load spikes hit both alike
        dense_times.append(once(loaded.model))
        pruned_times.append(once(pruned))
    return {
        "dense_seconds": dense_times,
        "pruned_seconds": pruned_times,
        "dense_parameters": sum(p.numel() for p in loaded.model.parameters()),
        "pruned_parameters": sum(p.numel() for p in pruned.parameters()),
        "sparsity": trajectory.state_at(0.5).sparsity(),
    }


MEASUREMENTS = {
    "plain": measure_plain,
    "gisp-step": measure_gisp_step,
    "run-sliced": lambda a: measure_run(a, True),
    "run-masked": lambda a: measure_run(a, False),
    "latency": measure_latency,
}


def _in_subprocess(name: str, argv: list[str]) -> dict:
    """Each measurement in its own process, so peak memory and allocator state do not leak between them."""
    output = subprocess.run(
        [sys.executable, __file__, "--measure", name, *argv], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--run-steps", type=int, default=10)
    parser.add_argument("--latency-repeats", type=int, default=40)
    parser.add_argument("--threads", type=int, help="torch threads (1 is steadier on a shared machine)")
    parser.add_argument("--measure", choices=sorted(MEASUREMENTS))
    parser.add_argument("--only", default="step,run,latency", help="which comparisons to run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--score",
        default="taylor",
        choices=("taylor", "fisher", "refit-fisher"),
        help="the GISP step's score",
    )
    parser.add_argument(
        "--scores", default="fisher,refit-fisher", help="the scores part compares these to taylor"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.measure:
        print(json.dumps(MEASUREMENTS[args.measure](args)))
        return
    argv = [
        f"--samples={args.samples}",
        f"--seq-len={args.seq_len}",
        f"--batch-size={args.batch_size}",
        f"--repeats={args.repeats}",
        f"--run-steps={args.run_steps}",
        f"--score={args.score}",
    ]
    only = set(args.only.split(","))
    results: dict[str, dict] = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "args": vars(args),
    }
    results["args"] = {**results["args"], "json": str(args.json) if args.json else None}
    if "step" in only:
        plain, step = _in_subprocess("plain", argv), _in_subprocess("gisp-step", argv)
        results["step"] = {"plain": plain, "gisp": step}
        ratio = statistics.median(step["seconds"]) / statistics.median(plain["seconds"])
        memory = step["peak_mb_above_model"] / max(plain["peak_mb_above_model"], 1e-9)
        print(
            f"GISP step / plain fwd+bwd time: {ratio:.3f}  (median {statistics.median(step['seconds']):.2f}s "
            f"vs {statistics.median(plain['seconds']):.2f}s; target <= 1.15)"
        )
        print(
            f"GISP step / plain fwd+bwd peak memory: {memory:.3f}  ({step['peak_mb_above_model']:.0f} MB vs "
            f"{plain['peak_mb_above_model']:.0f} MB above the loaded model; target <= 1.25)"
        )
    if "scores" in only:
        results["scores"] = {}
        for score in ["taylor", *filter(None, args.scores.split(","))]:
            results["scores"][score] = _in_subprocess("gisp-step", [*argv, f"--score={score}"])
        taylor = statistics.median(results["scores"]["taylor"]["seconds"])
        for score, measured in results["scores"].items():
            print(
                f"GISP step with score={score} / with taylor: {statistics.median(measured['seconds']) / taylor:.3f}  "
                f"(median {statistics.median(measured['seconds']):.2f}s; peak {measured['peak_mb_above_model']:.0f} MB)"
            )
    if "run" in only:
        sliced, masked = _in_subprocess("run-sliced", argv), _in_subprocess("run-masked", argv)
        results["run"] = {"sliced": sliced, "masked": masked}
        print(
            f"run to 50%: masked / sliced time: {masked['seconds'] / sliced['seconds']:.3f}  "
            f"({masked['seconds']:.1f}s vs {sliced['seconds']:.1f}s; target >= 1.15)"
        )
    if "latency" in only:
        latency = _in_subprocess("latency", argv)
        results["latency"] = latency
        ratio = statistics.median(latency["pruned_seconds"]) / statistics.median(latency["dense_seconds"])
        print(
            f"50% checkpoint / dense forward latency (1x128): {ratio:.3f}  "
            f"({statistics.median(latency['pruned_seconds']) * 1e3:.1f} ms vs "
            f"{statistics.median(latency['dense_seconds']) * 1e3:.1f} ms; target <= 0.7)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
