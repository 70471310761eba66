"""GGUF export, proved with llama.cpp itself: its logits equal the PyTorch checkpoint's on the same tokens.

The tiny checkpoints hold every awkward shape pruning makes (``gguf_fixtures``): uneven key/value groups, a layer
without heads (as layer 0 too), a layer without MLP channels, output biases (compensation), q/k/v biases (Qwen2).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader

from core.cli.main import main as gisp
from core.engine.export import export_gguf
from core.engine.export.regroup import regroup
from core.errors import UserInputError
from tests.engine.gguf_fixtures import AWKWARD_LAYERS, pruned_tiny_checkpoint
from tests.utils.tiny import CORPUS

TEXT = CORPUS[1] + " " + CORPUS[2]


def llama_logits(path: Path, tokens: list[int]) -> np.ndarray:
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=2, verbose=False, seed=0
    )
    llm.eval(tokens)
    return np.array(llm.scores[: llm.n_tokens], dtype=np.float64)


def assert_relative_close(actual: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Max absolute difference within ``rtol`` of the largest reference logit."""
    scale = np.abs(expected).max()
    worst = np.abs(actual - expected).max()
    assert worst <= rtol * scale, f"max |difference| {worst:.3g} > {rtol} x {scale:.3g}"


@pytest.mark.parametrize(("family", "output_biases"), [("llama", True), ("llama", False), ("qwen2", True)])
def test_llama_cpp_logits_equal_pytorch(tmp_path: Path, family: str, output_biases: bool) -> None:
    model = pruned_tiny_checkpoint(tmp_path / "ckpt", family, output_biases=output_biases)
    gguf_path = export_gguf(tmp_path / "ckpt", tmp_path / "model.gguf", gguf_type="f32")

    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(tmp_path / "ckpt")(TEXT)["input_ids"]
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].double().numpy()
    assert_relative_close(llama_logits(gguf_path, tokens), expected, rtol=1e-3)

    fields = GGUFReader(gguf_path).fields
    heads = [len(h) for h, _, _ in AWKWARD_LAYERS[family]]
    written = list(fields["deci.attention.head_count"].contents())
    # kept heads plus exact padding only: a head-less layer is 0 (or the one zero head that carries a bias)
    assert all(w >= h for w, h in zip(written, heads)) and sum(written) <= sum(heads) + 2 * len(heads)


def test_llama_cpp_tokenizes_like_the_checkpoint(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    pruned_tiny_checkpoint(tmp_path / "ckpt")
    gguf_path = export_gguf(tmp_path / "ckpt", tmp_path / "model.gguf", gguf_type="f16")
    from transformers import AutoTokenizer

    expected = AutoTokenizer.from_pretrained(tmp_path / "ckpt")(TEXT)["input_ids"]
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=64, verbose=False, vocab_only=True)
    assert llm.tokenize(TEXT.encode(), add_bos=False, special=False) == expected


@pytest.mark.parametrize("gguf_type", ["f16", "q8_0"])
def test_smaller_types_stay_close(tmp_path: Path, gguf_type: str) -> None:
    model = pruned_tiny_checkpoint(tmp_path / "ckpt")
    path = export_gguf(tmp_path / "ckpt", tmp_path / f"{gguf_type}.gguf", gguf_type=gguf_type)
    tokens = list(range(3, 40))
    with torch.no_grad():
        expected = model(torch.tensor([tokens])).logits[0].double().numpy()
    assert_relative_close(llama_logits(path, tokens), expected, rtol=0.05)
    if (
        gguf_type == "q8_0"
    ):  # pruned MLP widths are padded to whole blocks, so the down-projections quantise too
        downs = [t for t in GGUFReader(path).tensors if t.name.endswith("ffn_down.weight")]
        assert downs and all(t.tensor_type.name == "Q8_0" for t in downs)


def test_regrouping_keeps_every_query_with_its_key_value_head() -> None:
    plan = regroup([0, 0, 0, 1, 2, 2])
    size = plan.group_size
    for position, query in enumerate(plan.query_source):
        if query is not None:
            assert plan.kv_source[position // size] == [0, 0, 0, 1, 2, 2][query]
    assert sorted(q for q in plan.query_source if q is not None) == list(range(6))
    assert regroup([0, 0, 1, 1]).query_source == [0, 1, 2, 3]  # already even: unchanged


def test_export_refuses_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pruned_tiny_checkpoint(tmp_path / "ckpt")
    with pytest.raises(UserInputError, match="type must be one of"):
        export_gguf(tmp_path / "ckpt", tmp_path / "x.gguf", gguf_type="q4_k")
    capsys.readouterr()
    assert gisp(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert gisp(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "y.gguf"), "--type", "q8_0"]) == 0
    assert (tmp_path / "y.gguf").stat().st_size > 0
