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
