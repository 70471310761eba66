"""The smallest SmolLM2-135M-Instruct checkpoint within 1.5x the dense perplexity, read off a run's curve.

    gisp prune SmolLM2-135M-Instruct.Q4_1.gguf --calibration wikitext2 --sparsities 0.25 --steps 5 \\
        --samples 4 --reconstruction-samples 8 --curve --curve-points 6 --curve-perplexity-windows 8 \\
        --out runs/smol-curve
    python benchmarks/smollm2_selection.py runs/smol-curve --out benchmarks/results/smollm2-selection.json \
        --verify SmolLM2-135M-Instruct.Q4_1.gguf --calibration wikitext2

The choice is the service's own rule (``core.jobs.selection``, what ``GET /select?max_perplexity=`` answers):
the most pruned point of the curve whose perplexity is at most 1.5x the dense model's. Every point of the
curve was measured on the checkpoint as it would be downloaded (refitted), on WikiText-2 test windows.
``--verify MODEL`` re-measures the choice the way ``verify=true`` does (``core.pipeline.verify``: each
candidate rebuilt and refitted from the base model and the run's trajectory, then measured again, stepping
back until the bound holds) and records every point tried.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FACTOR = 1.5
QUESTION = "the smallest SmolLM2-135M-Instruct checkpoint within 1.5x the dense perplexity, and its sparsity"


def selection(report: dict[str, Any], factor: float = FACTOR) -> dict[str, Any]:
    from core.jobs.selection import select_point
    from core.schemas.curve import Curve, SelectionBounds

    curve = Curve.model_validate(report["curve"])
    assert curve.dense.perplexity is not None, "the run measured no dense perplexity"
    bound = factor * curve.dense.perplexity
    chosen = select_point(curve, SelectionBounds(max_perplexity=bound)).point
    ordered = sorted(curve.points, key=lambda p: p.sparsity)
    following = next((p for p in ordered if p.sparsity > chosen.sparsity), None)
    return {
        "bound": {"max_perplexity": bound, "factor_of_dense": factor},
        "dense": {"perplexity": curve.dense.perplexity, "parameters": curve.dense.parameters},
        "chosen": {
            "sparsity": chosen.sparsity,
            "label": chosen.label,
            "perplexity": chosen.perplexity,
            "parameters": chosen.parameters,
            "perplexity_ratio": (chosen.perplexity or 0) / curve.dense.perplexity,
        },
        "next_point": None
        if following is None
        else {
            "sparsity": following.sparsity,
            "label": following.label,
            "perplexity": following.perplexity,
            "parameters": following.parameters,
            "perplexity_ratio": (following.perplexity or 0) / curve.dense.perplexity,
        },
        "curve": [
            {"sparsity": p.sparsity, "perplexity": p.perplexity, "parameters": p.parameters}
            for p in [curve.dense, *ordered]
        ],
        "evaluation": report["curve"].get("perplexity"),
    }


def verification(run: Path, report: dict[str, Any], model: str, calibration: str) -> dict[str, Any]:
    """What ``verify=true`` answers for the 1.5x bound, computed here by the same code the worker runs."""
    from core.engine.trajectory import Trajectory
    from core.jobs.selection import select_point, verification_request
    from core.pipeline.inputs import LocalInputs
    from core.pipeline.verify import verify_candidates
    from core.pruning_spec import Layout
    from core.schemas.curve import Curve, SelectionBounds
    from core.schemas.jobs import CurveRequest

    trajectory = Trajectory.from_json((run / "trajectory.json").read_text())
    curve = Curve.model_validate(report["curve"])
    assert curve.dense.perplexity is not None
    bounds = SelectionBounds(max_perplexity=FACTOR * curve.dense.perplexity)
    request = verification_request(curve, bounds, select_point(curve, bounds))
    windows = report["curve"]["perplexity"]["windows"]
    settings = trajectory.settings
    inputs = LocalInputs(model, calibration, settings.objective, settings.seed)
    curve_request = CurveRequest(points=len(curve.points) + 1, perplexity_windows=windows)
    return verify_candidates(inputs, trajectory, Layout.nonuniform, curve_request, request)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="the folder `gisp prune --curve` wrote")
    parser.add_argument(
        "--out", type=Path, help="add the figures to this JSON file's runs (same command: replaced)"
    )
    parser.add_argument("--command", help="the prune command that made the run, recorded with the figures")
    parser.add_argument("--seconds", type=float, help="the run's wall time, recorded with the figures")
    parser.add_argument("--machine", help="where it ran, recorded with the figures")
    parser.add_argument("--verify", metavar="MODEL", help="re-measure the choice from this base model")
    parser.add_argument("--calibration", default="wikitext2", help="the run's calibration (for --verify)")
    args = parser.parse_args()
    report = json.loads((args.run / "report.json").read_text())
    figures = {
        "command": args.command,
        "machine": args.machine,
        "wall_seconds": args.seconds,
        **selection(report),
    }
    if args.verify:
        figures["verification"] = verification(args.run, report, args.verify, args.calibration)
    text = json.dumps(figures, indent=1)
    if args.out is not None:
        stored = (
            json.loads(args.out.read_text()) if args.out.is_file() else {"question": QUESTION, "runs": []}
        )
        stored["runs"] = [run for run in stored["runs"] if run.get("command") != args.command] + [figures]
        args.out.write_text(json.dumps(stored, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
