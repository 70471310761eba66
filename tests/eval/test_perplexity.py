"""Perplexity protocol on a tiny random Llama: windowing, counts, and agreement with a plain loop."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from core.eval.perplexity import text_perplexity, tokenize_text, wikitext2_perplexity
from tests.eval.conftest import SENTENCES, build_model

TEXT = "\n\n".join(SENTENCES * 4)


def _reference(model, ids: torch.Tensor, window: int) -> float:
    """One window at a time, full-vocabulary log-softmax, mean over every predicted token."""
    nlls = []
    for start in range(0, ids.numel() - window + 1, window):
        chunk = ids[start : start + window].unsqueeze(0)
        with torch.no_grad():
            logp = F.log_softmax(model(chunk).logits[0, :-1].double(), dim=-1)
        nlls.append(-logp.gather(-1, chunk[0, 1:].unsqueeze(-1)).squeeze(-1))
    return math.exp(torch.cat(nlls).mean().item())


def test_matches_plain_loop_and_counts(model, tokenizer) -> None:
    ids = tokenize_text(tokenizer, TEXT)
    result = text_perplexity(model, tokenizer, TEXT, window=32, batch_size=3)
    assert ids[0].item() == tokenizer.bos_token_id  # tokenized once, BOS only at the start
    assert result.n_text_tokens == ids.numel()
    assert result.n_windows == ids.numel() // 32
    assert result.n_predicted_tokens == result.n_windows * 31
    assert result.n_dropped_tokens == ids.numel() - result.n_windows * 32
    assert result.window == 32
    assert math.isclose(result.perplexity, _reference(model, ids, 32), rel_tol=1e-5)
    assert math.isclose(math.log(result.perplexity), result.mean_nll, rel_tol=1e-12)


def test_batch_size_does_not_change_the_number_and_runs_repeat(model, tokenizer) -> None:
    one = text_perplexity(model, tokenizer, TEXT, window=16, batch_size=1)
    many = text_perplexity(model, tokenizer, TEXT, window=16, batch_size=16)
    again = text_perplexity(model, tokenizer, TEXT, window=16, batch_size=16)
    assert math.isclose(one.perplexity, many.perplexity, rel_tol=1e-5)
    assert many == again


def test_window_none_uses_full_context_and_short_text_is_one_window(tokenizer) -> None:
    model = build_model(len(tokenizer), context=64)
    full = text_perplexity(model, tokenizer, TEXT, window=None)
    assert full.window == 64
    short = text_perplexity(model, tokenizer, "The sun is responsible", window=128)
    assert short.n_windows == 1
    assert short.n_predicted_tokens == short.n_text_tokens - 1
    assert short.n_dropped_tokens == 0


def test_uninformed_model_has_perplexity_near_vocabulary_size(tokenizer) -> None:
    model = build_model(len(tokenizer), init=1e-5)
    result = text_perplexity(model, tokenizer, TEXT, window=64)
    assert abs(result.perplexity / len(tokenizer) - 1) < 0.01


def test_wikitext_reader_feeds_the_protocol(model, tokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "wikitext-2-raw"
    folder.mkdir()
    lines = [" = Robert Boulter = ", " Robert Boulter is an English film , television and theatre actor ."]
    (folder / "wiki.test.raw").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    result = wikitext2_perplexity(model, tokenizer, data_dir=tmp_path, window=8)
    expected_text = "\n\n = Robert Boulter = \n\n\n\n\n" + lines[1] + "\n"
    assert result.n_text_tokens == len(tokenizer(expected_text)["input_ids"])
    assert result.perplexity == text_perplexity(model, tokenizer, expected_text, window=8).perplexity
