"""``gisp prune`` and ``gisp materialize``: the engine from the command line, no service needed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import ValidationError

from core.errors import UserInputError
from core.pruning_spec import Layout, Method, Normalization, Objective, PruneSettings, Schedule, Score


def checkpoint_dirname(sparsity: float) -> str:
    return f"sparsity-{sparsity:g}"


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    prune = subparsers.add_parser(
        "prune",
        help="prune a model along a GISP trajectory and write a checkpoint per target",
        description="Writes OUT/trajectory.json and one loadable checkpoint per target sparsity.",
    )
    prune.add_argument("model", help="hub id (org/name), local model directory, or local .gguf file")
    prune.add_argument("--revision", help="hub revision (branch, tag or commit)")
    prune.add_argument(
        "--calibration", required=True, help="named set (wikitext2, c4, cmqa, gsm8k, ...) or file"
    )
    prune.add_argument("--objective", default="perplexity", choices=[o.value for o in Objective])
    prune.add_argument(
        "--sparsities", required=True, help="comma-separated targets in (0,1), e.g. 0.2,0.3,0.5"
    )
    prune.add_argument("--out", required=True, type=Path, help="output directory")
    prune.add_argument("--method", default="gisp", choices=[m.value for m in Method])
    prune.add_argument("--steps", type=int, help="iterative steps up to the largest target")
    prune.add_argument("--schedule", choices=[s.value for s in Schedule])
    prune.add_argument("--normalization", choices=[n.value for n in Normalization])
    prune.add_argument(
        "--score",
        choices=[s.value for s in Score],
        help="gisp / gisp-oneshot: taylor, fisher or refit-fisher",
    )
    prune.add_argument("--samples", type=int, help="calibration sequences per step")
    prune.add_argument("--seq-len", type=int, help="tokens per calibration sequence")
    prune.add_argument("--batch-size", type=int, help="sequences per forward/backward micro-batch")
    prune.add_argument("--protected-layers", help="comma-separated layer indices never pruned")
    prune.add_argument(
        "--bias-compensation",
        action=argparse.BooleanOptionalAction,
        help="fold removed structures' mean output into biases (default: on for gisp and gisp-oneshot)",
    )
    prune.add_argument(
        "--reconstruction",
        action=argparse.BooleanOptionalAction,
        help="refit each checkpoint's output projections by least squares on calibration tokens (default: on)",
    )
    prune.add_argument("--reconstruction-samples", type=int, help="calibration sequences the refit reads")
    prune.add_argument("--layout", default="nonuniform", choices=[layout.value for layout in Layout])
    prune.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    prune.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    prune.add_argument("--seed", type=int)
    prune.add_argument(
        "--data-dir", type=Path, help="folder of named calibration sets (default GISP_DATA_DIR)"
    )
    prune.add_argument("--allow-pickle", action="store_true", help="operator override: accept .bin weights")
    prune.add_argument(
        "--allow-remote-code", action="store_true", help="operator override: run repository code"
    )
    prune.set_defaults(handler=run_prune)

    materialize = subparsers.add_parser(
        "materialize", help="write the checkpoint at any sparsity of an existing trajectory"
    )
    materialize.add_argument(
        "run_dir", type=Path, help="directory holding trajectory.json (a `gisp prune` --out)"
    )
    materialize.add_argument("--sparsity", type=float, required=True)
    materialize.add_argument("--out", type=Path, required=True)
    materialize.add_argument("--layout", default="nonuniform", choices=[layout.value for layout in Layout])
    materialize.add_argument("--model", help="base model reference, if it moved since the run")
    materialize.add_argument("--device", default="cpu")
    materialize.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    materialize.add_argument(
        "--calibration",
        help="the run's calibration set or file, when the run refits checkpoints (reconstruction)",
    )
    materialize.add_argument("--data-dir", type=Path, help="folder of named calibration sets")
    materialize.set_defaults(handler=run_materialize)
    add_model_parsers(subparsers)


def settings_from_args(args: argparse.Namespace) -> PruneSettings:
    """Build PruneSettings from flags, reporting a bad value with the flag's name."""
    try:
        sparsities = [float(v) for v in args.sparsities.split(",") if v.strip()]
    except ValueError:
        raise UserInputError(f"not a list of numbers: '{args.sparsities}'", field="--sparsities") from None
    values: dict[str, object] = {"method": args.method, "objective": args.objective, "sparsities": sparsities}
    flags = (
        "steps",
        "schedule",
        "normalization",
        "score",
        "samples",
        "seq_len",
        "batch_size",
        "seed",
        "bias_compensation",
        "reconstruction",
        "reconstruction_samples",
    )
    for flag in flags:
        if getattr(args, flag) is not None:
            values[flag] = getattr(args, flag)
    if args.protected_layers:
        values["protected_layers"] = [int(v) for v in args.protected_layers.split(",") if v.strip()]
    try:
        return PruneSettings.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        field = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "arguments"
        raise UserInputError(first["msg"], field=field) from None


def run_prune(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    from core.data.calibration import load_calibration_items
    from core.engine.loading import load_model
    from core.engine.materialize import materialize, settings_for_layout
    from core.engine.pruner import prune

    items = load_calibration_items(
        args.calibration, settings.objective, data_dir=args.data_dir, seed=settings.seed
    )
    loaded = load_model(
        args.model,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        allow_pickle=args.allow_pickle,
        allow_remote_code=args.allow_remote_code,
    )
    settings = settings_for_layout(settings, loaded.model.config, Layout(args.layout))
    args.out.mkdir(parents=True, exist_ok=True)
    trajectory_path = args.out / "trajectory.json"

    def save(_record: object, trajectory: object) -> None:
        trajectory_path.write_text(trajectory.to_json())  # type: ignore[attr-defined]

    trajectory = prune(loaded, items, settings, on_step=save, progress=True)
    save(None, trajectory)
    for sparsity in settings.sparsities:
        path = materialize(
            loaded,
            trajectory,
            sparsity,
            args.out / checkpoint_dirname(sparsity),
            layout=args.layout,
            calibration=items,
        )
        manifest = json.loads((path / "gisp_manifest.json").read_text())
        print(
            f"{path}: sparsity {manifest['sparsity']:.4f} (decoder parameters), "
            f"structure ratio {manifest['structure_ratio']:.4f}, "
            f"{manifest['parameters'] / 1e6:.2f}M of {manifest['dense_parameters'] / 1e6:.2f}M parameters"
        )
    return 0


def run_materialize(args: argparse.Namespace) -> int:
    from core.engine.loading import load_model
    from core.engine.materialize import materialize
    from core.engine.trajectory import Trajectory

    trajectory_file = args.run_dir / "trajectory.json"
    if not trajectory_file.is_file():
        raise UserInputError(f"{trajectory_file} does not exist", field="run_dir")
    trajectory = Trajectory.from_json(trajectory_file.read_text())
    reference = args.model or trajectory.base_model.get("ref")
    if not reference:
        raise UserInputError("the trajectory does not name its base model; pass --model", field="--model")
    loaded = load_model(
        reference,
        revision=trajectory.base_model.get("revision") if not args.model else None,
        dtype=args.dtype,
        device=args.device,
    )
    sha = trajectory.base_model.get("weights_sha256")
    if sha and loaded.identity.get("weights_sha256") not in (None, sha):
        raise UserInputError(
            "the base model's weights differ from the ones this trajectory pruned", field="--model"
        )
    items = None
    if args.calibration:
        from core.data.calibration import load_calibration_items

        run = PruneSettings.model_validate(trajectory.settings)
        items = load_calibration_items(args.calibration, run.objective, data_dir=args.data_dir, seed=run.seed)
    path = materialize(loaded, trajectory, args.sparsity, args.out, layout=args.layout, calibration=items)
    print(path, file=sys.stdout)
    return 0


def add_model_parsers(subparsers: argparse._SubParsersAction) -> None:
    models = subparsers.add_parser("models", help="manage the operator's models folder")
    actions = models.add_subparsers(dest="models_command", required=True)
    importer = actions.add_parser(
        "import", help="copy a model (.gguf file, directory or hub id) into the models folder as safetensors"
    )
    importer.add_argument("source", help=".gguf file, local model directory, or hub id")
    importer.add_argument("--name", required=True, help="folder name; jobs then refer to it as local/NAME")
    importer.add_argument("--models-dir", type=Path, help="default: GISP_MODELS_DIR or ./models")
    importer.add_argument("--revision")
    importer.set_defaults(handler=run_models_import)


def run_models_import(args: argparse.Namespace) -> int:
    import os

    from core.engine.loading import import_model

    models_dir = args.models_dir or Path(os.environ.get("GISP_MODELS_DIR", "models"))
    path = import_model(args.source, models_dir / args.name, revision=args.revision)
    print(path)
    return 0
