"""Load a pruned checkpoint and generate from it.

    python examples/load_checkpoint.py ckpt/job_...-0.3000 "The capital of France is"

A `uniform` checkpoint is a stock config: plain transformers loads it. A `nonuniform` one (per-layer sizes)
needs the model class that reads them; with this package installed it is imported from here, so no code is
run from the folder (elsewhere, `trust_remote_code=True` runs the copy shipped beside the weights: do that
only for folders whose files match the sha256 that `gisp_manifest.json` lists, as checked below).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from core.engine.modeling.modeling_gisp import GispForCausalLM


def verified_manifest(folder: Path) -> dict:
    """The manifest, after checking that every file it lists has the sha256 it records."""
    manifest = json.loads((folder / "gisp_manifest.json").read_text())
    for name, digest in manifest["files"].items():
        if hashlib.sha256((folder / name).read_bytes()).hexdigest() != digest:
            raise SystemExit(f"{name} does not match the manifest; refusing to load")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("prompt", nargs="?", default="The capital of France is")
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args()

    manifest = verified_manifest(args.checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    model_class = GispForCausalLM if manifest["layout"] == "nonuniform" else AutoModelForCausalLM
    model = model_class.from_pretrained(args.checkpoint).eval()
    print(f"sparsity {manifest['sparsity']:.3f}: {manifest['parameters'] / 1e6:.1f}M parameters")

    inputs = tokenizer(args.prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=args.tokens, do_sample=False)
    print(tokenizer.decode(output[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
