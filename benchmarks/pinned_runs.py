"""Digests of small, fixed pruning runs: proof that a change of the code's shape changed no result.

    python benchmarks/pinned_runs.py --out benchmarks/results/pinned-<commit>.json
    python benchmarks/pinned_runs.py --compare benchmarks/results/pinned-<earlier commit>.json

Every run prunes a tiny random model (the test suite's builders) with one method and option set, then
materialises two checkpoints. A run's digest covers its trajectory (removals in order, thresholds, losses,
sparsities, survivor scores, compensation means: everything but timings and library versions) and the
bytes of every checkpoint's weights. Two commits that print the same digests computed the same models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUNS: dict[str, dict[str, Any]] = {
    "gisp": {},
    "gisp-no-compensation": {"bias_compensation": False},
    "gisp-fisher": {"score": "fisher"},
    "gisp-refit-fisher": {"score": "refit-fisher"},
    "gisp-reference-cosine": {"experimental": {"normalization": "reference", "schedule": "cosine"}},
    "gisp-no-refit": {"reconstruction": False},
    "gisp-margin": {"objective": "margin"},
    "gisp-oneshot": {"method": "gisp-oneshot"},
    "gisp-paper": {"method": "gisp-paper"},
    "wanda-sp": {"method": "wanda-sp"},
    "wanda-sp-dense": {"method": "wanda-sp-dense"},
    "flap": {"method": "flap"},
    "flap-headsum": {"method": "flap-headsum"},
    "magnitude": {"method": "magnitude"},
    "random": {"method": "random"},
}
# Runs renamed since a pin file was written: "flap" and "wanda-sp" meant today's variants until the
# official methods took those names. A comparison looks a run up under its old name when the new is absent.
RENAMED_SINCE = {"flap-headsum": "flap", "wanda-sp-dense": "wanda-sp"}
FAMILIES = {"llama": {"heads": 4, "kv_heads": 2}, "qwen2": {"heads": 4, "kv_heads": 4}}
LAYOUTS = ("nonuniform", "uniform")


def _trajectory_digest(trajectory: Any) -> str:
    """Everything the run computed; not how its settings are written down, nor timings and versions."""
    data = trajectory.to_dict()
    for key in ("versions", "settings", "schema_version", "batch_size"):
        data.pop(key, None)
    for step in data["steps"]:
        step.pop("seconds", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _spelled_for(settings_type: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Options as the settings type at hand spells them (earlier commits kept experimental options flat)."""
    if options.get("method", "gisp") not in ("gisp", "gisp-paper"):  # one-shot methods take one step
        options = {key: value for key, value in options.items() if key != "steps"}
    if "experimental" in settings_type.model_fields:
        return options
    flat = {key: value for key, value in options.items() if key != "experimental"}
    return {**flat, **options.get("experimental", {})}


def _fit(settings: Any, config: Any, layout: Any) -> Any:
    try:
        from core.engine.architectures import family_of
        from core.pruning_spec import fit_to_layout
    except ImportError:  # earlier commits
        from core.engine.materialize import settings_for_layout

        return settings_for_layout(settings, config, layout)
    return fit_to_layout(settings, family_of(config), layout)


def run_all(selected: list[str]) -> dict[str, dict[str, str]]:
    import torch

    torch.set_num_threads(1)
    from core.data.calibration import MultipleChoiceCalibrationItem, TextItem
    from core.engine.materialize import materialize
    from core.engine.pruner import prune
    from core.pruning_spec import Layout, PruneSettings
    from tests.engine.conftest import CORPUS, build_loaded

    text = [TextItem(text=" ".join(CORPUS))] * 2
    choices = [
        MultipleChoiceCalibrationItem(
            prompt=f"Question {i}: which is right?", choices=[" yes", " no", " maybe"], label=i % 3
        )
        for i in range(8)
    ]
    digests: dict[str, dict[str, str]] = {}
    for family, shape in FAMILIES.items():
        for name in selected:
            for layout in LAYOUTS:
                options = {"sparsities": [0.2, 0.4], "steps": 4, "samples": 4, "seq_len": 32, **RUNS[name]}
                settings = PruneSettings.model_validate(_spelled_for(PruneSettings, options))
                loaded = build_loaded(family, **shape)
                try:
                    settings = _fit(settings, loaded.model.config, Layout(layout))
                except Exception as error:  # a combination the engine refuses is pinned as refused
                    digests[f"{family}/{name}/{layout}"] = {"refused": type(error).__name__}
                    continue
                items = choices if settings.objective.value == "margin" else text
                trajectory = prune(loaded, items, settings)
                entry = {"trajectory": _trajectory_digest(trajectory)}
                with tempfile.TemporaryDirectory() as tmp:
                    for sparsity in (0.2, 0.3):
                        try:
                            out = materialize(
                                loaded, trajectory, sparsity, Path(tmp) / str(sparsity), layout=layout,
                                calibration=items,
                            )  # fmt: skip
                            entry[f"weights@{sparsity}"] = _weights_digest(out)
                        except Exception as error:
                            entry[f"weights@{sparsity}"] = f"refused: {type(error).__name__}"
                digests[f"{family}/{name}/{layout}"] = entry
                print(f"{family}/{name}/{layout}: {entry['trajectory'][:12]}", file=sys.stderr, flush=True)
    return digests


def _renamed(key: str) -> str:
    """A key of a pin file written before the renames, under today's name of the run it pinned."""
    family, name, layout = key.split("/")
    old_to_new = {old: new for new, old in RENAMED_SINCE.items()}
    return f"{family}/{old_to_new.get(name, name)}/{layout}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="write the digests here (JSON)")
    parser.add_argument("--compare", type=Path, help="digests of an earlier commit: report every difference")
    parser.add_argument(
        "--runs", default=",".join(RUNS), help="comma-separated subset of: " + ", ".join(RUNS)
    )
    args = parser.parse_args()
    digests = run_all([name for name in args.runs.split(",") if name])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    if args.compare:
        earlier = json.loads(args.compare.read_text())
        if not any(key.split("/")[1] in RENAMED_SINCE for key in earlier):
            earlier = {_renamed(key): value for key, value in earlier.items()}
        new = [key for key in digests if key not in earlier]
        for key in new:
            print(f"NEW {key}: no earlier digest")
        differing = [key for key in digests if key in earlier and earlier[key] != digests[key]]
        for key in differing:
            print(f"DIFFERS {key}: {earlier.get(key)} -> {digests[key]}")
        compared = len(digests) - len(new)
        print(f"{compared - len(differing)} of {compared} runs identical to {args.compare}")
        return 1 if differing else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
