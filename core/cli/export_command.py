"""``gisp export``: a checkpoint folder as a file another runtime runs (GGUF for llama.cpp)."""

from __future__ import annotations

import argparse
from pathlib import Path

GGUF_TYPE_NAMES = ("f32", "f16", "q8_0")  # core.engine.export.GGUF_TYPES, without importing torch for --help


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    export = subparsers.add_parser(
        "export",
        help="write a checkpoint folder as a GGUF file for llama.cpp",
        description="Writes CHECKPOINT_DIR (a folder `gisp prune`, `gisp materialize` or a job download wrote) as "
        "one GGUF file with its per-layer sizes, biases, tokenizer and chat template; llama.cpp, Ollama, "
        "LM Studio and llama-cpp-python run it.",
    )
    export.add_argument("checkpoint_dir", type=Path, help="checkpoint folder (config.json, *.safetensors)")
    export.add_argument("--format", default="gguf", choices=["gguf"], help="output format")
    export.add_argument("--out", type=Path, required=True, help="output file, e.g. model.gguf")
    export.add_argument(
        "--type", default="f16", choices=GGUF_TYPE_NAMES, help="weight type (vectors stay float32)"
    )
    export.set_defaults(handler=run_export)


def run_export(args: argparse.Namespace) -> int:
    from core.errors import UserInputError

    if not args.checkpoint_dir.is_dir():
        raise UserInputError(f"{args.checkpoint_dir} is not a folder", field="checkpoint_dir")
    from core.engine.export import export_gguf

    out = export_gguf(args.checkpoint_dir, args.out, gguf_type=args.type)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB ({args.type})")
    return 0
