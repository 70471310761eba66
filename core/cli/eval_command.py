"""``gisp eval``: evaluate a checkpoint or model and write the versioned JSON report.

Heavy imports (torch, transformers) happen inside :func:`run` so building the ``gisp`` parser stays
fast. Model loading goes through the single function :func:`_load`, the one place to switch to the
engine's loader.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

MANIFEST = "gisp_manifest.json"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="perplexity, zero-shot accuracy, GSM8K and efficiency of a model or pruned checkpoint",
        description=(
            "Evaluates MODEL (a checkpoint directory written by `gisp prune`, a Hugging Face model "
            "directory, or a .gguf file) and writes a versioned JSON report."
        ),
    )
    parser.add_argument("model", help="checkpoint directory, model directory or .gguf file")
    parser.add_argument(
        "--tasks",
        default="cmqa",
        help="comma list of boolq,piqa,hellaswag,winogrande,arc_easy,"
        "arc_challenge,openbookqa, or cmqa for all seven; 'none' to skip",
    )
    parser.add_argument("--limit", type=int, help="first N items of each task (default: all)")
    parser.add_argument(
        "--window", default="128", help="perplexity window in tokens, or 'full' for the model's context"
    )
    parser.add_argument("--no-perplexity", action="store_true", help="skip WikiText-2 perplexity")
    parser.add_argument("--gsm8k", action="store_true", help="also run GSM8K exact match (greedy generation)")
    parser.add_argument("--gsm8k-limit", type=int, help="first N GSM8K test items")
    parser.add_argument(
        "--gsm8k-shots", type=int, default=5, help="first K train items as exemplars; 0 = none"
    )
    parser.add_argument("--gsm8k-cot", action="store_true", help="zero-shot 'Let's think step by step.'")
    parser.add_argument("--gsm8k-max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--efficiency", action="store_true", help="parameters, FLOPs, latency, throughput, memory"
    )
    parser.add_argument(
        "--sparsity", type=float, help="sparsity to file the result under (default: manifest, else 0)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="an earlier report (e.g. the dense model's) to merge in"
    )
    parser.add_argument("--out", type=Path, help="write the JSON report here (default: print it)")
    parser.add_argument("--plots", type=Path, help="write PNG charts into this folder")
    parser.add_argument(
        "--data-dir", type=Path, help="data folder (default: GISP_DATA_DIR or ../shared/datasets)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads; 1 is often faster on a shared or small machine"
    )
    parser.set_defaults(handler=run)


def _manifest(path: Path) -> dict[str, Any] | None:
    file = path / MANIFEST
    return json.loads(file.read_text(encoding="utf-8")) if path.is_dir() and file.is_file() else None


def _load(path: str | Path, *, dtype: str = "float32", device: str = "cpu") -> tuple[Any, Any]:
    """(model, tokenizer) from a .gguf file or a model directory; no code from the directory ever runs.

    Our own checkpoints load through the engine's own model class, never through the modeling file beside
    them; a directory that needs code of its own is refused (see ``load_without_remote_code``).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.engine.loading import load_without_remote_code

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    path = Path(path)
    if path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch_dtype)
    else:
        model, tokenizer = load_without_remote_code(path, dtype=torch_dtype)
    model.to(device)
    model.eval()
    return model, tokenizer


def _window(value: str) -> int | None:
    from core.errors import UserInputError

    if value == "full":
        return None
    try:
        window = int(value)
    except ValueError:
        raise UserInputError(
            f"expected a number of tokens or 'full', got '{value}'", field="--window"
        ) from None
    if window < 2:
        raise UserInputError("the window must be at least 2 tokens", field="--window")
    return window


def _model_info(path: Path, manifest: dict[str, Any] | None) -> dict[str, Any]:
    info: dict[str, Any] = {"path": str(path)}
    if manifest:
        for key in (
            "base_model",
            "sparsity",
            "requested_sparsity",
            "method",
            "objective",
            "layout",
            "parameters",
        ):
            if key in manifest:
                info[key] = manifest[key]
    return info


def _summary(report: dict[str, Any]) -> str:
    lines = []
    for entry in report["results"]:
        metrics = entry["metrics"]
        parts = [f"sparsity {entry['sparsity']:g}"]
        if metrics.get("perplexity"):
            p = metrics["perplexity"]
            parts.append(
                f"wikitext2 ppl {p['perplexity']:.3f} (window {p['window']}, {p['n_predicted_tokens']} tokens)"
            )
        for task, result in (metrics.get("multiple_choice") or {}).items():
            parts.append(
                f"{task} acc {result['acc']:.4f} acc_norm {result['acc_norm']:.4f} (n={result['n']})"
            )
        if metrics.get("mean_accuracy"):
            m = metrics["mean_accuracy"]
            parts.append(f"mean acc {m['acc']:.4f} acc_norm {m['acc_norm']:.4f}")
        if metrics.get("gsm8k"):
            g = metrics["gsm8k"]
            parts.append(
                f"gsm8k strict {g['strict_match']['accuracy']:.4f} flexible {g['flexible_extract']['accuracy']:.4f}"
                f" (n={g['n']})"
            )
        if metrics.get("efficiency"):
            e = metrics["efficiency"]
            parts.append(
                f"{e['parameters'] / 1e6:.2f}M parameters, {e['flops_per_token'] / 1e6:.1f} MFLOPs/token"
            )
        lines.append("\n  ".join(parts))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from core.errors import UserInputError
    from core.eval import build_report, read_report, write_report
    from core.eval.efficiency import EfficiencySettings
    from core.eval.evaluate import evaluate_model
    from core.eval.gsm8k import Gsm8kSettings
    from core.eval.report import evaluations_from_report

    window = _window(args.window)
    tasks = None if args.tasks.strip().lower() in ("", "none") else args.tasks
    path = Path(args.model)
    if not path.exists():
        raise UserInputError(f"{path} does not exist", field="model")
    manifest = _manifest(path)
    sparsity = args.sparsity if args.sparsity is not None else float((manifest or {}).get("sparsity", 0.0))
    baseline = evaluations_from_report(read_report(args.baseline)) if args.baseline else {}

    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise UserInputError("must be at least 1", field="--threads")
        torch.set_num_threads(args.threads)
    model, tokenizer = _load(path, dtype=args.dtype, device=args.device)
    try:
        evaluation = evaluate_model(
            model,
            tokenizer,
            tasks=tasks,
            limit=args.limit,
            perplexity_window=window,
            perplexity=not args.no_perplexity,
            gsm8k=Gsm8kSettings(
                limit=args.gsm8k_limit,
                shots=args.gsm8k_shots,
                cot=args.gsm8k_cot,
                max_new_tokens=args.gsm8k_max_new_tokens,
            )
            if args.gsm8k
            else False,
            efficiency=EfficiencySettings(seq_len=window or 128) if args.efficiency else False,
            device=args.device,
            data_dir=args.data_dir,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    except FileNotFoundError as error:
        raise UserInputError(str(error), field="--data-dir") from None
    try:
        report = build_report({**baseline, sparsity: evaluation}, model=_model_info(path, manifest))
    except ValueError as error:
        raise UserInputError(str(error), field="--baseline") from None

    print(_summary(report), file=sys.stderr if args.out is None else sys.stdout)
    if args.out is not None:
        write_report(report, args.out)
        print(f"report: {args.out}")
    else:
        print(json.dumps(report, indent=2, sort_keys=True))
    if args.plots is not None:
        from core.eval.plots import plot_report

        for written in plot_report(report, args.plots):
            print(f"plot: {written}", file=sys.stderr)
    return 0
