"""Heads against channels: which share of one GISP step should be heads? Measured, not assumed.

    python benchmarks/gisp_balance.py --trajectory out/quality/trajectories/gisp-....json --at 0.3 \
        --delta 0.05 --head-weights 1,0.5,0.25,0.1 --samples 64

At the state a cached GISP run reached at ``--at``, one gradient (``--samples`` windows) gives the GISP
element scores; each head weight w multiplies the params-normalised head scores by w before the global
ranking, and the step to ``--at + --delta`` is taken and scored by the held-out WikiText-2 validation loss.
w = 1 is the engine's params normalisation; w < 1 lets heads go earlier. ``--kv own`` leaves the KV
head's elements out of a query head's score (and block), to see what the KV share contributes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from core.engine import importance
from core.engine.importance import LayerScores
from core.engine.materialize import pruned_model
from core.engine.objectives import CalibrationPool
from core.engine.pruner import _rank, _select
from core.engine.structures import Geometry, Kind
from core.engine.trajectory import Trajectory
from core.pruning_spec import PruneSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectory", type=Path, required=True)
    parser.add_argument("--at", type=float, default=0.3)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--head-weights", default="1,0.5,0.25,0.1")
    parser.add_argument("--kv", choices=("share", "own"), default="share")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--windows", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


@torch.no_grad()
def element_scores(model: torch.nn.Module, g: Geometry, kv: str, head_weight: float) -> list[LayerScores]:
    """Params-normalised GISP scores with the head scores scaled by ``head_weight``."""

    def element(linear: torch.nn.Linear) -> torch.Tensor:
        return (linear.weight * linear.weight.grad).abs().float()

    scores = []
    for layer in model.model.layers:
        own, kv_sum, readers = importance._head_sums(layer, g.head_dim, element)
        share = 1.0 if kv == "share" else 0.0
        total = own + share * kv_sum / readers.clamp(min=1)
        block = 2 * g.head_dim * g.hidden_size * (1 + share / readers.clamp(min=1))
        channels = importance._channel_sums(layer, element) / (3 * g.hidden_size)
        scores.append(LayerScores(head_weight * total / block, channels))
    return scores


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
    geometry = trajectory.geometry
    eligible = [i for i in range(geometry.num_layers) if i not in trajectory.protected_layers]
    settings = PruneSettings(**{**data["settings"], "samples": args.samples})
    state = trajectory.state_at(args.at)

    def loss_of(s: object) -> float:
        return math.log(evaluator.perplexity(pruned_model(loaded, trajectory, s), "heldout", args.windows)["perplexity"])

    model = pruned_model(loaded, trajectory, state)
    importance.prepare_for_gradients(model)
    importance.accumulate_gradients(model, CalibrationPool(split.calibration, loaded.tokenizer, settings).batches(777))
    base = loss_of(state)
    print(f"start {args.at:.3f}: held-out loss {base:.4f}; kv {args.kv}; {args.samples} windows", flush=True)
    print("| head weight | heads removed | channels removed | held-out loss increase |")
    print("|---|---|---|---|")
    for weight in (float(w) for w in args.head_weights.split(",")):
        scores = element_scores(model, geometry, args.kv, weight)
        new_state, removed, _ = _select(state, _rank(state, scores, geometry, True), eligible, args.at + args.delta)
        heads = sum(1 for s in removed if s.kind is Kind.head)
        print(f"| {weight} | {heads} | {len(removed) - heads} | {loss_of(new_state) - base:+.4f} |", flush=True)
    model.zero_grad(set_to_none=True)
    loaded.model.zero_grad(set_to_none=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
