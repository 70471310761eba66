"""The real model: SmolLM2-135M-Instruct (Llama, GQA 9q/3kv, 30 layers) from its GGUF file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.assets import smollm2_gguf, smollm2_model_dir
from core.data.calibration import load_calibration_items
from core.engine.loading import load_model
from core.engine.materialize import materialize
from core.engine.pruner import prune
from core.pruning_spec import Objective, PruneSettings

pytestmark = pytest.mark.slow

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def smollm2():
    return load_model(smollm2_model_dir())


def test_gguf_loads_as_a_plain_llama() -> None:
    smollm2 = load_model(smollm2_gguf())
    config = smollm2.model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (30, 9, 3)
    assert not hasattr(config, "quantization_config") or config.quantization_config is None
    assert smollm2.identity["source"] == "gguf" and len(smollm2.identity["weights_sha256"]) == 64
    imported = load_model(smollm2_model_dir())
    ids = smollm2.tokenizer("Hello there", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(imported.model(ids).logits, smollm2.model(ids).logits)


def test_prune_smollm2_and_load_the_checkpoint_with_stock_transformers(smollm2, tmp_path: Path) -> None:
    items = load_calibration_items("wikitext2", Objective.perplexity)
    settings = PruneSettings(sparsities=[0.2], steps=2, samples=4, seq_len=64)
    trajectory = prune(smollm2, items, settings, batch_size=4)
    assert trajectory.steps[-1].sparsity >= 0.2
    assert trajectory.protected_layers == [0, 1, 2, 29]
    out = materialize(smollm2, trajectory, 0.2, tmp_path / "smol-0.2", calibration=items)
    manifest = json.loads((out / "gisp_manifest.json").read_text())
    assert manifest["parameters"] < manifest["dense_parameters"]
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = smollm2.tokenizer
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**ids, max_new_tokens=8, do_sample=False)
    text = tokenizer.decode(generated[0][ids["input_ids"].shape[1] :])
    assert generated.shape[1] == ids["input_ids"].shape[1] + 8 and text.strip()


def test_processes_importing_on_a_fresh_machine_at_once_share_one_complete_copy(tmp_path: Path) -> None:
    """Workers that start together each import into their own folder; one lands, nothing half-written stays."""
    script = "from core.assets import smollm2_model_dir; print(smollm2_model_dir())"
    env = {**os.environ, "GISP_CACHE_DIR": str(tmp_path), "GISP_SMOLLM2_GGUF": str(smollm2_gguf())}
    root = Path(__file__).resolve().parents[2]
    processes = [
        subprocess.Popen([sys.executable, "-c", script], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].strip() for p in processes]
    assert [p.returncode for p in processes] == [0, 0]
    target = tmp_path / "models" / "smollm2-135m-instruct"
    assert outputs == [str(target), str(target)]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == [target.name]
    assert load_model(target).model.config.num_hidden_layers == 30
