"""The engine on a CUDA device: the same decisions as on CPU, and checkpoints that load and match.

These need a GPU, so the default run deselects them (``-m "not cuda"`` in the pytest options); run them
where one is present with ``pytest -m cuda tests/engine/test_cuda.py``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from core.data.calibration import TextItem
from core.engine.loading import LoadedModel
from core.engine.materialize import materialize
from core.engine.pruner import prune
from core.engine.trajectory import Trajectory
from core.pruning_spec import PruneSettings
from tests.engine.conftest import CORPUS, build_loaded

pytestmark = pytest.mark.cuda

ITEMS = [TextItem(text=" ".join(CORPUS))]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_on(device: str, dtype: torch.dtype = torch.float32) -> tuple[LoadedModel, Trajectory]:
    tiny = build_loaded("llama", heads=8, kv_heads=2)
    loaded = LoadedModel(tiny.model.to(device=device, dtype=dtype), tiny.tokenizer, tiny.identity)
    settings = PruneSettings(sparsities=[0.3, 0.5], steps=4, samples=4, seq_len=16, reconstruction_samples=8)
    return loaded, prune(loaded, ITEMS, settings, batch_size=2)


@pytest.fixture(scope="module")
def cpu_run() -> tuple[LoadedModel, Trajectory]:
    return run_on("cpu")


@pytest.fixture(scope="module")
def cuda_run() -> tuple[LoadedModel, Trajectory]:
    assert torch.cuda.is_available(), "these tests need a CUDA device"
    return run_on("cuda")


def test_cuda_run_removes_what_the_cpu_run_removes(cpu_run, cuda_run) -> None:  # type: ignore[no-untyped-def]
    _, on_cpu = cpu_run
    _, on_cuda = cuda_run
    assert [step.removed for step in on_cuda.steps] == [step.removed for step in on_cpu.steps]
    for cpu_step, cuda_step in zip(on_cpu.steps, on_cuda.steps, strict=True):
        assert cuda_step.loss == pytest.approx(cpu_step.loss, rel=1e-4)
        assert cuda_step.sparsity == cpu_step.sparsity


def test_cuda_checkpoint_with_refit_matches_the_cpu_one(cpu_run, cuda_run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    outputs = {}
    for name, (loaded, trajectory) in (("cpu", cpu_run), ("cuda", cuda_run)):
        out = materialize(loaded, trajectory, 0.5, tmp_path / name, calibration=ITEMS)
        outputs[name] = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True).eval()
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = outputs["cpu"](ids).logits
        got = outputs["cuda"].to("cuda")(ids.to("cuda")).logits.cpu()
    torch.testing.assert_close(got, expected, atol=2e-4, rtol=1e-4)


def test_bfloat16_run_on_cuda_ships_a_bfloat16_checkpoint_that_generates(tmp_path: Path) -> None:
    loaded, trajectory = run_on("cuda", torch.bfloat16)
    assert all(math.isfinite(step.loss) for step in trajectory.steps)
    out = materialize(loaded, trajectory, 0.5, tmp_path / "bf16", calibration=ITEMS)
    config = json.loads((out / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    model = AutoModelForCausalLM.from_pretrained(out, trust_remote_code=True, dtype=torch.bfloat16).to("cuda")
    ids = torch.tensor([[1, 40, 41, 42]], device="cuda")
    generated = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=2)
    assert generated.shape == (1, 9) and generated.device.type == "cuda"
    assert torch.isfinite(model(ids).logits.float()).all()
