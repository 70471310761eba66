"""Steps against tokens on one stretch of a trajectory: a cheap, local stand-in for whole GISP runs.

    python benchmarks/gisp_segment.py --trajectory out/quality/trajectories/gisp-....json --at 0.3 \
        --delta 0.05 --variant 1x64 --variant 2x32 --variant 4x16 --seeds 2

From the state a cached GISP run reached at ``--at``, each ``--variant STEPSxSAMPLES`` prunes ``--delta``
more sparsity in STEPS equal GISP steps of SAMPLES calibration windows each (the engine's scoring,
ranking and slicing), and reports the held-out WikiText-2 validation loss reached, averaged over
``--seeds`` independent calibration draws. Variants with the same STEPS x SAMPLES cost the same.
``--set FIELD=JSON`` changes a PruneSettings field (e.g. the normalisation) for every variant.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from core.engine import importance
from core.engine.materialize import pruned_model
from core.engine.objectives import CalibrationPool
from core.engine.pruner import _rank, _select
from core.engine.slicing import slice_model
from core.engine.structures import Kind, PruningState
from core.engine.trajectory import Trajectory
from core.pruning_spec import PruneSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectory", type=Path, required=True)
    parser.add_argument("--at", type=float, default=0.3)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--variant", action="append", default=[], metavar="STEPSxSAMPLES")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--windows", type=int, default=64, help="held-out windows for the loss")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def run_segment(
    loaded: Any,
    trajectory: Trajectory,
    start: PruningState,
    settings: PruneSettings,
    pool: CalibrationPool,
    targets: list[float],
    seed: int,
) -> tuple[PruningState, int]:
    """GISP steps from ``start`` to each of ``targets`` in turn, on fresh seeded draws; returns heads removed."""
    geometry = trajectory.geometry
    eligible = [i for i in range(geometry.num_layers) if i not in trajectory.protected_layers]
    model = pruned_model(loaded, trajectory, start)
    importance.prepare_for_gradients(model)
    state, heads = start, 0
    for step, target in enumerate(targets):
        importance.accumulate_gradients(model, pool.batches(10_000 * (seed + 1) + step))
        scores = importance.taylor_scores(model, geometry, settings.normalization)
        new_state, removed, _ = _select(state, _rank(state, scores, geometry, True), eligible, target)
        slice_model(model, state, new_state)
        heads += sum(1 for s in removed if s.kind is Kind.head)
        state = new_state
    model.zero_grad(set_to_none=True)
    loaded.model.zero_grad(set_to_none=True)
    return state, heads


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from core.assets import smollm2_model_dir
    from core.engine.loading import load_model

    loaded = load_model(smollm2_model_dir())
    split = lib.wikitext_split(loaded.tokenizer)
    evaluator = lib.Evaluator(loaded, heldout_text=split.heldout_text)
    data = json.loads(args.trajectory.read_text())
    trajectory = Trajectory.from_dict(data["trajectory"])
    overrides = {name: json.loads(value) for name, _, value in (s.partition("=") for s in args.set)}
    start = trajectory.state_at(args.at)

    def loss_of(state: PruningState) -> float:
        model = pruned_model(loaded, trajectory, state)
        return math.log(evaluator.perplexity(model, "heldout", args.windows)["perplexity"])

    base = loss_of(start)
    print(f"start {args.at:.3f}: held-out loss {base:.4f}; overrides {overrides}", flush=True)
    print("| variant | windows per segment | held-out loss increase (per seed) | mean | heads removed |")
    print("|---|---|---|---|---|")
    for variant in args.variant:
        steps, samples = (int(v) for v in variant.split("x"))
        settings = PruneSettings(**{**data["settings"], **overrides, "samples": samples})
        pool = CalibrationPool(split.calibration, loaded.tokenizer, settings)
        targets = [args.at + args.delta * (i + 1) / steps for i in range(steps)]
        increases, heads = [], []
        started = time.perf_counter()
        for seed in range(args.seeds):
            state, removed_heads = run_segment(loaded, trajectory, start, settings, pool, targets, seed)
            increases.append(loss_of(state) - base)
            heads.append(removed_heads)
        print(
            f"| {variant} | {steps * samples} | {', '.join(f'{v:+.4f}' for v in increases)} "
            f"| {statistics.mean(increases):+.4f} | {heads} |  ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
