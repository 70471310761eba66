"""SmolLM2-135M-Instruct pruned to 40 %, exported as an f16 GGUF, run by llama.cpp: the same greedy text and the
same perplexity as the PyTorch checkpoint."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from core.assets import smollm2_model_dir
from core.data.calibration import load_calibration_items
from core.data.text import wikitext2_text
from core.engine.export import export_gguf
from core.engine.loading import load_model
from core.engine.materialize import materialize_model
from core.engine.pruner import prune
from core.eval.perplexity import DEFAULT_WINDOW, perplexity_of_ids, tokenize_text, windows_of
from core.pruning_spec import Objective, PruneSettings

pytestmark = pytest.mark.slow
os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
]
NEW_TOKENS = 32
WINDOWS = 64
NEAR_TIE = 0.25  # logit gap (nats) under which two tokens count as tied: f16 weights move logits by ~0.1


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory):
    llama_cpp = pytest.importorskip("llama_cpp")
    smollm2 = load_model(smollm2_model_dir())
    items = load_calibration_items("wikitext2", Objective.perplexity)
    settings = PruneSettings(sparsities=[0.4], steps=2, samples=4, seq_len=64, reconstruction=False)
    trajectory = prune(smollm2, items, settings, batch_size=4)
    folder = tmp_path_factory.mktemp("smol") / "sparsity-0.4"
    _, model = materialize_model(smollm2, trajectory, 0.4, folder, calibration=items)
    gguf = export_gguf(folder, folder.parent / "smol-0.4-f16.gguf", gguf_type="f16")
    llm = llama_cpp.Llama(
        model_path=str(gguf), n_ctx=512, n_batch=512, logits_all=True, n_threads=2, verbose=False
    )
    return smollm2.tokenizer, model.float().eval(), llm


def llama_logits(llm, tokens: list[int]) -> np.ndarray:  # type: ignore[no-untyped-def]
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: llm.n_tokens], dtype=np.float64)


@torch.no_grad()
def greedy(model: torch.nn.Module, ids: list[int], steps: int) -> list[int]:
    out = list(ids)
    for _ in range(steps):
        out.append(int(model(torch.tensor([out])).logits[0, -1].argmax()))
    return out[len(ids) :]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_continuations_match(pruned, prompt: str) -> None:
    tokenizer, model, llm = pruned
    ids = tokenizer(prompt)["input_ids"]
    expected = greedy(model, ids, NEW_TOKENS)
    logits = llama_logits(llm, ids + expected)
    chosen = logits[len(ids) - 1 : -1].argmax(axis=-1).tolist()  # llama.cpp's greedy pick at every position
    if chosen == expected:
        return
    first = next(i for i, (a, b) in enumerate(zip(chosen, expected)) if a != b)
    with torch.no_grad():
        torch_logits = model(torch.tensor([ids + expected[:first]])).logits[0, -1]
    gap = float(torch_logits[expected[first]] - torch_logits[chosen[first]])
    print(f"{prompt!r}: first divergence at token {first}, PyTorch logit gap {gap:.4f}")
    assert gap <= NEAR_TIE, f"{prompt!r} diverges at token {first} with a logit gap of {gap:.3f}"


def test_wikitext2_perplexity_within_one_percent(pruned) -> None:
    tokenizer, model, llm = pruned
    ids = tokenize_text(tokenizer, wikitext2_text("test"))
    windows = windows_of(ids, DEFAULT_WINDOW)[:WINDOWS]
    reference = perplexity_of_ids(model, windows.reshape(-1), window=DEFAULT_WINDOW).perplexity
    total, count = 0.0, 0
    for window in windows.tolist():
        logits = llama_logits(llm, window)[:-1]
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        total -= float(log_probs[np.arange(len(window) - 1), window[1:]].sum())
        count += len(window) - 1
    ours = math.exp(total / count)
    print(
        f"perplexity on {WINDOWS} windows of {DEFAULT_WINDOW}: PyTorch {reference:.4f}, llama.cpp f16 {ours:.4f}"
    )
    assert abs(ours / reference - 1) <= 0.01
