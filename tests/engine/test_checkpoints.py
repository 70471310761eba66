"""Checkpoints users load: non-uniform with shipped code, uniform on stock classes, manifests, no pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.data.calibration import TextItem
from core.engine.materialize import checkpoint_model, materialize, stock_uniform_state
from core.engine.pruner import prune
from core.pruning_spec import METHODS, Method, PruneSettings
from tests.engine.conftest import CORPUS, build_loaded

ITEMS = [TextItem(text=" ".join(CORPUS))]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run(family: str = "llama", method: Method = Method.gisp, reconstruction: bool = True, **kwargs):
    loaded = build_loaded(family, **kwargs)
    values = dict(method=method, sparsities=[0.3, 0.5], samples=4, seq_len=16, reconstruction=reconstruction)
    if METHODS[method].iterative:
        values["steps"] = 4
    if reconstruction:
        values["reconstruction_samples"] = 8
    settings = PruneSettings(**values)
    return loaded, prune(loaded, ITEMS, settings, batch_size=2)


def generate(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model.generate(input_ids=ids, max_new_tokens=6, do_sample=False, pad_token_id=2)


@pytest.mark.parametrize(("family", "heads", "kv_heads"), [("llama", 4, 2), ("qwen2", 4, 4), ("qwen3", 4, 2)])
def test_nonuniform_checkpoint_loads_on_stock_transformers_and_generates(
    tmp_path: Path, family: str, heads: int, kv_heads: int
) -> None:
    loaded, trajectory = run(family, heads=heads, kv_heads=kv_heads)
    out = materialize(loaded, trajectory, 0.5, tmp_path / "ckpt", calibration=ITEMS)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_gisp.py", "configuration_gisp.py"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)
    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_gisp.GispForCausalLM"
    manifest = json.loads((out / "gisp_manifest.json").read_text())
    assert manifest["sparsity"] >= 0.5 and manifest["layout"] == "nonuniform"
    assert [layer["channels"] for layer in manifest["layers"]] == config["gisp_layers"]["intermediate_size"]
    assert manifest["calibration_fingerprint"] == trajectory.calibration_fingerprint

    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    assert type(reloaded).__name__ == "GispForCausalLM"
    in_memory = checkpoint_model(loaded, trajectory, trajectory.state_at(0.5), ITEMS).eval()
    ids = torch.randint(3, 300, (1, 10))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, in_memory(ids).logits, atol=1e-5, rtol=0)
    assert torch.equal(generate(reloaded, ids), generate(in_memory, ids))
    assert sum(p.numel() for p in reloaded.parameters()) == manifest["parameters"]


def test_uniform_checkpoint_loads_without_custom_code(tmp_path: Path) -> None:
    loaded, trajectory = run("llama", heads=8, kv_heads=2)
    out = materialize(loaded, trajectory, 0.5, tmp_path / "uniform", layout="uniform", calibration=ITEMS)
    names = {p.name for p in out.iterdir()}
    assert "modeling_gisp.py" not in names
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    model = AutoModelForCausalLM.from_pretrained(out).eval()  # stock class, trust_remote_code not needed
    assert type(model).__name__ == "LlamaForCausalLM"
    manifest = json.loads((out / "gisp_manifest.json").read_text())
    counts = manifest["layers"]
    assert all(c == counts[0] for c in counts)
    assert manifest["sparsity"] >= 0.5 - 1e-9
    assert manifest["sparsity"] < 0.5 + 3 * 64 * 3 / trajectory.geometry.dense_decoder_params
    ids = torch.randint(3, 300, (1, 8))
    state = stock_uniform_state(loaded, trajectory, 0.5)
    expected = checkpoint_model(loaded, trajectory, state, ITEMS)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, expected(ids).logits, atol=1e-5, rtol=0)
    assert generate(model, ids).shape[1] == ids.shape[1] + 6


def test_flap_bias_compensation_is_saved_and_reloaded(tmp_path: Path) -> None:
    loaded, trajectory = run("llama", method=Method.flap, reconstruction=False)
    out = materialize(loaded, trajectory, 0.5, tmp_path / "flap")
    config = json.loads((out / "config.json").read_text())
    assert config["o_proj_bias"] and config["down_proj_bias"]
    reloaded = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True)
    biases = [layer.mlp.down_proj.bias for layer in reloaded.model.layers]
    assert any(b.abs().sum() > 0 for b in biases), (
        "removed channels' mean output should be folded into a bias"
    )
    uniform = materialize(loaded, trajectory, 0.5, tmp_path / "flap-uniform", layout="uniform")
    stock = AutoModelForCausalLM.from_pretrained(uniform)
    assert any(layer.mlp.down_proj.bias.abs().sum() > 0 for layer in stock.model.layers)


def test_any_sparsity_on_the_trajectory_can_be_materialised(tmp_path: Path) -> None:
    loaded, trajectory = run("llama")
    out = materialize(loaded, trajectory, 0.37, tmp_path / "mid", calibration=ITEMS)
    manifest = json.loads((out / "gisp_manifest.json").read_text())
    assert 0.37 <= manifest["sparsity"] <= 0.5
    with pytest.raises(Exception, match="beyond this trajectory"):
        materialize(loaded, trajectory, 0.9, tmp_path / "too-far", calibration=ITEMS)
