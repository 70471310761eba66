"""How noisy is one GISP step? Scores from independent calibration draws at one point of a trajectory.

    python benchmarks/gisp_noise.py --trajectory out/quality/trajectories/gisp-....json --at 0.3 --draws 4

At the state a cached GISP run reached at ``--at``, the next step (``--delta`` more sparsity) is chosen
from each of ``--draws`` independent draws of ``--samples`` windows, and from all draws' gradients pooled.
Reported: how much the chosen sets overlap (Jaccard), how many heads each removes, and the held-out
WikiText-2 validation loss after each choice. Draws that agree, with pooled choices no better, mean the
step is not noise-limited; disagreeing draws with a better pooled choice mean more tokens per step pay.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from core.engine import importance
from core.engine.materialize import pruned_model
from core.engine.objectives import CalibrationPool
from core.engine.pruner import _rank, _select
from core.engine.structures import Kind
from core.engine.trajectory import Trajectory
from core.pruning_spec import PruneSettings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trajectory", type=Path, required=True)
    parser.add_argument("--at", type=float, default=0.3)
    parser.add_argument("--delta", type=float, default=0.025)
    parser.add_argument("--draws", type=int, default=4)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--windows", type=int, default=32, help="held-out windows for the loss")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def heldout_loss(model: torch.nn.Module, evaluator: lib.Evaluator, windows: int) -> float:
    import math

    return math.log(evaluator.perplexity(model, "heldout", windows)["perplexity"])


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
    settings = PruneSettings(**{**data["settings"], "samples": args.samples})
    state = trajectory.state_at(args.at)
    geometry = trajectory.geometry
    eligible = [i for i in range(geometry.num_layers) if i not in trajectory.protected_layers]
    pool = CalibrationPool(split.calibration, loaded.tokenizer, settings)
    model = pruned_model(loaded, trajectory, state)
    importance.prepare_for_gradients(model)

    choices = {}
    pooled: dict[str, torch.Tensor] = {}
    for draw in range(args.draws):
        importance.accumulate_gradients(model, pool.batches(1000 + draw))
        for name, parameter in model.named_parameters():
            if parameter.grad is not None:
                pooled[name] = pooled.get(name, 0) + parameter.grad.detach().clone()
        ranked = _rank(state, importance.taylor_scores(model, geometry, settings.normalization), geometry, True)
        choices[f"draw{draw}"] = _select(state, ranked, eligible, args.at + args.delta)
    for name, parameter in model.named_parameters():
        if name in pooled:
            parameter.grad = pooled[name]
    ranked = _rank(state, importance.taylor_scores(model, geometry, settings.normalization), geometry, True)
    choices["pooled"] = _select(state, ranked, eligible, args.at + args.delta)
    model.zero_grad(set_to_none=True)

    base = heldout_loss(pruned_model(loaded, trajectory, state), evaluator, args.windows)
    print(f"held-out loss at {args.at:.3f}: {base:.4f}")
    for name, (new_state, removed, _) in choices.items():
        loss = heldout_loss(pruned_model(loaded, trajectory, new_state), evaluator, args.windows)
        heads = sum(1 for s in removed if s.kind is Kind.head)
        print(f"{name}: removes {len(removed)} ({heads} heads), held-out loss {loss:.4f} (+{loss - base:.4f})")
    sets = {name: set(removed) for name, (_, removed, _) in choices.items()}
    for a, b in combinations(sets, 2):
        print(f"jaccard {a} {b}: {len(sets[a] & sets[b]) / len(sets[a] | sets[b]):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
