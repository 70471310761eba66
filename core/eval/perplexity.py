"""Perplexity of a causal LM on WikiText-2 raw test, or on any text, with the LLM-Pruner protocol.

The text is tokenized once (special tokens as the tokenizer adds them, e.g. a leading BOS), cut into
non-overlapping windows of ``window`` tokens (128 by default, LLM-Pruner's setting; ``window=None``
uses the model's full context), the incomplete last window is dropped, and perplexity is
``exp(mean NLL)`` over every predicted token: each window predicts its tokens 2..window from the
ones before it, with no context carried across windows. Text shorter than one window is scored as
a single window so short user texts still get a number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.data.text import wikitext2_files, wikitext2_text
from core.eval.runtime import deterministic, eval_mode, resolve_device

DEFAULT_WINDOW = 128


@dataclass(frozen=True)
class PerplexityResult:
    """The number and what it was computed over, so results with different windows are not mixed."""

    perplexity: float
    mean_nll: float
    window: int
    n_windows: int
    n_text_tokens: int  # tokens in the whole tokenized text
    n_predicted_tokens: int  # tokens whose NLL entered the mean
    n_dropped_tokens: int  # tail that did not fill a window

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def context_length(model: torch.nn.Module) -> int:
    """The model's full context (``max_position_embeddings``), for ``window=None``."""
    config = getattr(model, "config", None)
    length = getattr(config, "max_position_embeddings", None)
    if not length:
        raise ValueError("model config has no max_position_embeddings; pass an explicit window")
    return int(length)


def tokenize_text(tokenizer: Any, text: str) -> torch.Tensor:
    """Token ids of the whole text, once, as a 1-D tensor (no truncation, no length warning)."""
    ids = tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.long)


def windows_of(ids: torch.Tensor, window: int) -> torch.Tensor:
    """Non-overlapping full windows, shape (n, window); the whole text if it is shorter than one."""
    if ids.numel() < 2:
        raise ValueError("need at least two tokens to measure perplexity")
    count = ids.numel() // window
    if count == 0:
        return ids.unsqueeze(0)
    return ids[: count * window].view(count, window)


@torch.no_grad()
def token_nlls(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Per-token NLL (float32) of tokens 1..L-1 of each row given the tokens before them."""
    logits = model(input_ids=batch, use_cache=False).logits[:, :-1, :].float()
    targets = batch[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none").view(
        targets.shape
    )


def perplexity_of_ids(
    model: torch.nn.Module,
    ids: torch.Tensor,
    *,
    window: int | None = DEFAULT_WINDOW,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> PerplexityResult:
    """Perplexity of already tokenized text (1-D ids) under the windowing protocol above."""
    window = context_length(model) if window is None else int(window)
    if window < 2:
        raise ValueError("window must be at least 2 tokens")
    target = resolve_device(model, device)
    chunks = windows_of(ids, window)
    total = 0.0
    predicted = 0
    with eval_mode(model), deterministic():
        for start in range(0, chunks.size(0), batch_size):
            batch = chunks[start : start + batch_size].to(target)
            nll = token_nlls(model, batch).double()
            total += float(nll.sum())
            predicted += nll.numel()
    mean = total / predicted
    return PerplexityResult(
        perplexity=math.exp(mean),
        mean_nll=mean,
        window=int(chunks.size(1)),
        n_windows=int(chunks.size(0)),
        n_text_tokens=int(ids.numel()),
        n_predicted_tokens=predicted,
        n_dropped_tokens=int(ids.numel() - chunks.numel()),
    )


def text_perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    window: int | None = DEFAULT_WINDOW,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> PerplexityResult:
    """Perplexity of any text (a user's upload, a calibration set) under the same protocol."""
    return perplexity_of_ids(
        model, tokenize_text(tokenizer, text), window=window, batch_size=batch_size, device=device
    )


def wikitext2_perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    data_dir: Path | None = None,
    window: int | None = DEFAULT_WINDOW,
    batch_size: int = 8,
    device: str | torch.device | None = None,
) -> PerplexityResult:
    """WikiText-2 raw test perplexity, the number structured-pruning papers report."""
    text = wikitext2_text("test", data_dir)
    return text_perplexity(model, tokenizer, text, window=window, batch_size=batch_size, device=device)


def wikitext2_test_files(data_dir: Path | None = None) -> list[Path]:
    """Files the WikiText-2 perplexity reads, for the report's dataset fingerprints."""
    return wikitext2_files("test", data_dir)
