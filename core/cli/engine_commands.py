"""``gisp prune`` and ``gisp materialize``: the engine from the command line, no service needed."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.cli.spec_flags import add_spec_flags, parse_spec, spec_values
from core.errors import UserInputError
from core.pruning_spec import Layout
from core.schemas.jobs import RunSettings

DEFAULT_BATCH_SIZE = 8  # core.engine.objectives.DEFAULT_BATCH_SIZE, without importing torch to print --help


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    prune = subparsers.add_parser(
        "prune",
        help="prune a model along a GISP trajectory and write a checkpoint per target",
        description="Writes OUT/trajectory.json, one loadable checkpoint per target sparsity (OUT/sparsity-<s>/) "
        "and OUT/report.json. The run's options are the job API's, with the same defaults.",
    )
    prune.add_argument("model", help="hub id (org/name), local model directory, or local .gguf file")
    prune.add_argument("--revision", help="hub revision (branch, tag or commit)")
    prune.add_argument(
        "--calibration",
        required=True,
        help="named set (wikitext2, c4, cmqa, gsm8k, ...) or a text/JSONL file",
    )
    prune.add_argument("--out", required=True, type=Path, help="output directory")
    add_spec_flags(prune, RunSettings)
    machine = prune.add_argument_group("this machine (no effect on the result beyond float noise)")
    machine.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    machine.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    machine.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="sequences per forward/backward micro-batch",
    )
    machine.add_argument(
        "--data-dir", type=Path, help="folder of named calibration sets (default GISP_DATA_DIR)"
    )
    machine.add_argument("--allow-pickle", action="store_true", help="operator override: accept .bin weights")
    machine.add_argument(
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


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """The run's settings from the flags given, a bad value reported with its flag's name."""
    settings: RunSettings = parse_spec(RunSettings, spec_values(args, RunSettings))
    return settings


def run_prune(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    _check_model_reference(args.model)
    from core.pipeline.inputs import LocalInputs
    from core.pipeline.run import RunOptions, run_pipeline
    from core.pipeline.sink import FolderSink

    inputs = LocalInputs(
        model=args.model,
        calibration=args.calibration,
        objective=settings.objective,
        seed=settings.seed,
        revision=args.revision,
        device=args.device,
        dtype=args.dtype,
        data_dir=args.data_dir,
        allow_pickle=args.allow_pickle,
        allow_remote_code=args.allow_remote_code,
    )
    sink = FolderSink(args.out)
    options = RunOptions(batch_size=args.batch_size, device=args.device, data_dir=args.data_dir)
    run_pipeline(settings, inputs, sink, options=options, hooks=_progress_bar())
    for path in sink.checkpoints:
        manifest = json.loads((path / "gisp_manifest.json").read_text())
        print(
            f"{path}: sparsity {manifest['sparsity']:.4f} (decoder parameters), "
            f"structure ratio {manifest['structure_ratio']:.4f}, "
            f"{manifest['parameters'] / 1e6:.2f}M of {manifest['dense_parameters'] / 1e6:.2f}M parameters"
        )
    return 0


def _check_model_reference(reference: str) -> None:
    """A reference that names a local path must exist: it is never retried as a hub id. ``models/smolm2``
    is a path (a folder ``models`` is here), ``HuggingFaceTB/SmolLM2-135M`` a hub id."""
    first = reference.split("/", 1)[0]
    looks_like_path = (
        reference.startswith((".", "/", "~"))
        or reference.endswith(".gguf")
        or reference.count("/") != 1
        or Path(first).expanduser().is_dir()
    )
    if looks_like_path and not Path(reference).expanduser().exists():
        raise UserInputError(f"no model at '{reference}' (a local folder or .gguf file)", field="model")


def _progress_bar() -> Any:
    from tqdm import tqdm

    from core.pipeline.run import RunHooks

    bar = tqdm(unit="step", file=sys.stderr)

    def on_step(record: Any, _trajectory: Any) -> None:
        bar.total = record.total_steps
        bar.set_postfix(loss=f"{record.loss:.4f}", sparsity=f"{record.sparsity:.3f}")
        bar.update(1)

    return RunHooks(on_step=on_step)


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

        run = trajectory.settings
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
