"""Every checkpoint folder carries a Hugging Face model card that describes that checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from core.engine.materialize import materialize
from tests.engine.test_checkpoints import ITEMS, run


def test_checkpoint_folder_has_a_model_card_with_its_own_facts(tmp_path: Path) -> None:
    loaded, trajectory = run("llama")
    out = materialize(loaded, trajectory, 0.5, tmp_path / "ckpt", calibration=ITEMS)
    card = (out / "README.md").read_text()
    manifest = json.loads((out / "gisp_manifest.json").read_text())
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    for line in ("library_name: transformers", "pipeline_tag: text-generation", "- pruned", "- gisp"):
        assert line in front
    assert f"{manifest['sparsity']:.2%}" in body
    assert f"| method | {manifest['method']} |" in body
    for index, layer in enumerate(manifest["layers"]):
        assert f"| {index} | {layer['heads']} | {layer['kv_heads']} | {layer['channels']} |" in body
    assert "trust_remote_code=True" in body and "gisp export" in body
    assert "README.md" in manifest["files"]
    assert manifest["method"] == "gisp"  # so the card lists the run's departures from the authors' method
    assert "## How this run departs from the paper's GISP" in body
    assert "| bias_compensation | on, scores centred by it | none |" in body
    assert "| steps | 4 steps | 112 steps |" in body


def test_a_run_with_evaluations_puts_them_in_the_card(tmp_path: Path) -> None:
    from core.cli.main import main
    from tests.utils.tiny import save_tiny_model
    from tests.worker.conftest import write_named_sets

    write_named_sets(tmp_path / "data")  # a small stand-in WikiText-2 test split: the evaluation stays quick

    model_dir = save_tiny_model(tmp_path / "model", layers=2)
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(ITEMS[0].text for _ in range(4)))
    flags = [
        "--sparsities",
        "0.3",
        "--steps",
        "2",
        "--samples",
        "4",
        "--seq-len",
        "16",
        "--no-reconstruction",
        "--data-dir",
        str(tmp_path / "data"),
    ]
    out = tmp_path / "run"
    code = main(["prune", str(model_dir), "--calibration", str(text), *flags, "--evaluations", "perplexity"])
    assert code == 2  # --out is required: a one-line error, not a run
    assert (
        main(
            [
                "prune",
                str(model_dir),
                "--calibration",
                str(text),
                *flags,
                "--evaluations",
                "perplexity",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    (result,) = [r for r in report["evaluation"]["results"] if r["sparsity"] == 0.3]
    perplexity = result["metrics"]["perplexity"]
    card = (out / "sparsity-0.3" / "README.md").read_text()
    assert f"| perplexity | {perplexity['perplexity']:.4g} | {perplexity['n_windows']} windows of" in card
    manifest = json.loads((out / "sparsity-0.3" / "gisp_manifest.json").read_text())
    from core.engine.loading import file_sha256

    assert manifest["files"]["README.md"] == file_sha256(out / "sparsity-0.3" / "README.md")
