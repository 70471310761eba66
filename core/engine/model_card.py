"""The Hugging Face model card (``README.md``) every checkpoint folder carries.

Uploading a checkpoint folder with the usual hub tools then publishes a complete model page: YAML front matter the
hub indexes (base model, library, pipeline, tags, the base model's license where it is known) and a body that says
what was removed, how it was chosen, how much is left, how it scored, and how to load it (transformers, and
llama.cpp through the GGUF export).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.departures import departures_from_paper
from core.pruning_spec import PruneSettings

CARD = "README.md"


def write_model_card(
    folder: Path, manifest: dict[str, Any], *, evaluation: dict[str, Any] | None = None
) -> Path:
    """Writes ``folder/README.md`` from the checkpoint's manifest (and its evaluation results, if any)."""
    path = folder / CARD
    path.write_text(model_card(manifest, evaluation=evaluation, license=base_license(manifest)))
    return path


def model_card(manifest: dict[str, Any], *, evaluation: dict[str, Any] | None, license: str | None) -> str:
    base = manifest.get("base_model") or {}
    base_id = str(base.get("id") or base.get("ref") or "unknown")
    layout = manifest["layout"]
    front = ["---"]
    if "/" in base_id and not base_id.startswith(("/", ".")):
        front += ["base_model:", f"- {base_id}"]
    front += [
        "library_name: transformers",
        "pipeline_tag: text-generation",
        "tags:",
        "- pruned",
        "- structured-pruning",
        "- gisp",
        f"- {layout}",
    ]
    if license:
        front.append(f"license: {license}")
    front.append("---")
    settings = manifest.get("settings") or {}
    body = [
        "",
        f"# {base_id}, {manifest['sparsity']:.1%} of its decoder parameters removed",
        "",
        f"Structurally pruned from `{base_id}` with {manifest['method'].upper()} (Global Iterative Structured "
        "Pruning service): whole attention heads and MLP channels were removed, so the model is smaller and "
        "faster on any runtime, with no sparse kernels needed.",
        "",
        "| | |",
        "|---|---|",
        f"| method | {manifest['method']} |",
        f"| objective | {manifest['objective']} |",
        f"| calibration | {settings.get('samples', '?')} sequences of {settings.get('seq_len', '?')} tokens "
        f"(fingerprint `{str(manifest.get('calibration_fingerprint', ''))[:12]}`) |",
        f"| refit (least squares on calibration outputs) | {'yes' if settings.get('reconstruction') else 'no'} |",
        f"| requested sparsity | {manifest['requested_sparsity']:.1%} |",
        f"| measured sparsity (decoder parameters) | {manifest['sparsity']:.2%} |",
        f"| parameters | {manifest['parameters'] / 1e6:.2f} M of {manifest['dense_parameters'] / 1e6:.2f} M |",
        f"| layout | {layout} |",
        "",
        "## Per-layer sizes",
        "",
        _layer_summary(manifest["layers"]),
        "",
        *_departures_section(settings),
        *_evaluation_section(evaluation),
        "## How to load",
        "",
        "With transformers:",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
        f'model = AutoModelForCausalLM.from_pretrained("path/to/this/folder"{_remote_code(layout)})',
        "```",
        "",
    ]
    if layout == "nonuniform":
        body += [
            "Every layer keeps its own number of heads and channels, so the model code ships beside the "
            "weights (`modeling_gisp.py`, `configuration_gisp.py`, registered through `auto_map`); read them "
            "before you pass `trust_remote_code=True`. The uniform layout of the same job loads without it. "
            "`config.json` names the family the model was pruned from as `model_type` (its tokenizer loads as "
            "the base model's does, with no question asked) and keeps the per-layer sizes under `gisp_layers`; "
            "the family's stock class refuses these weights.",
            "",
        ]
    body += [
        "With llama.cpp (per-layer sizes are kept: llama.cpp's `deci` architecture for the non-uniform layout):",
        "",
        "```sh",
        "gisp export path/to/this/folder --format gguf --out model.gguf --type f16",
        'llama-cli -m model.gguf -p "Hello"',
        "```",
        "",
    ]
    return "\n".join(front + body)


def _remote_code(layout: str) -> str:
    return ", trust_remote_code=True" if layout == "nonuniform" else ""


def _layer_summary(layers: list[dict[str, int]]) -> str:
    lines = ["| layer | heads | kv heads | MLP channels |", "|---|---|---|---|"]
    lines += [
        f"| {index} | {layer['heads']} | {layer['kv_heads']} | {layer['channels']} |"
        for index, layer in enumerate(layers)
    ]
    for key, name in (("heads", "heads"), ("channels", "MLP channels")):
        values = [layer[key] for layer in layers]
        lines.append("")
        lines.append(f"{name}: min {min(values)}, mean {sum(values) / len(values):.1f}, max {max(values)}")
    return "\n".join(lines)


def _evaluation_section(metrics: dict[str, Any] | None) -> list[str]:
    """The job's evaluation of this checkpoint (``core.eval.evaluate_model``'s metrics), with item counts."""
    if not metrics:
        return []
    rows = []
    perplexity = metrics.get("perplexity")
    if isinstance(perplexity, dict) and "perplexity" in perplexity:
        items = f"{perplexity.get('n_windows')} windows of {perplexity.get('window')} tokens"
        rows.append(
            (str(perplexity.get("dataset", "wikitext2")), "perplexity", perplexity["perplexity"], items)
        )
    for task, result in sorted((metrics.get("multiple_choice") or {}).items()):
        for metric in ("acc", "acc_norm"):
            if isinstance(result, dict) and metric in result:
                rows.append((task, metric, result[metric], f"{result.get('n')} items"))
    gsm8k = metrics.get("gsm8k")
    if isinstance(gsm8k, dict):
        for metric, value in sorted(gsm8k.items()):
            if isinstance(value, float):
                rows.append(("gsm8k", metric, value, f"{gsm8k.get('n', '?')} items"))
    if not rows:
        return []
    lines = ["## Evaluation", "", "| task | metric | value | items |", "|---|---|---|---|"]
    lines += [f"| {task} | {metric} | {value:.4g} | {items} |" for task, metric, value, items in rows]
    return [*lines, ""]


def _departures_section(settings: dict[str, Any]) -> list[str]:
    """How this gisp run departs from the authors' method (gisp-paper), with what each departure measured."""
    try:
        prune_settings = PruneSettings.model_validate(
            {name: settings[name] for name in PruneSettings.model_fields if name in settings}
        )
    except ValueError:
        return []
    departures = departures_from_paper(prune_settings)
    if not departures:
        return []
    lines = [
        "## How this run departs from the paper's GISP",
        "",
        "`gisp` keeps the paper's first-order score and global ranking (arXiv 2510.18030) and changes the "
        "settings below; `gisp-paper` is the method as the authors' code runs it. Measured alone: perplexity "
        "with the departure ÷ without it (below 1 helps), paired 95 % interval.",
        "",
        "| departure | this run | gisp-paper | measured alone |",
        "|---|---|---|---|",
    ]
    lines += [f"| {d.name} | {d.this_run} | {d.paper} | {d.measured} |" for d in departures]
    return [*lines, ""]


def base_license(manifest: dict[str, Any]) -> str | None:
    """The base model's license, where its files say it: a README front matter or a GGUF's metadata."""
    ref = (manifest.get("base_model") or {}).get("ref")
    if not ref:
        return None
    path = Path(str(ref)).expanduser()
    if path.is_dir() and (path / CARD).is_file():
        match = re.search(r"^license:\s*(\S+)", (path / CARD).read_text(errors="replace"), re.MULTILINE)
        return match.group(1) if match else None
    if path.suffix == ".gguf" and path.is_file():
        try:
            from gguf import GGUFReader

            field = GGUFReader(path).fields.get("general.license")
            return None if field is None else str(field.contents())
        except Exception:  # a license is informative; an unreadable file must not fail the checkpoint
            return None
    return None
