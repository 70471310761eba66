"""Batched log-likelihood of continuations given contexts, the way lm-eval-harness computes it.

Tokenization follows lm-eval's ``HFLM`` for causal models: trailing spaces of the context move to
the front of the continuation; then ``whole = encode(context + continuation)`` and
``context = encode(context)`` (both with the tokenizer's default special tokens, e.g. BOS), and the
continuation tokens are ``whole[len(context):]``. This keeps the leading-space merge (" yes" as one
token) that encoding the continuation alone would break. An empty context is replaced by the
BOS/EOS token, as lm-eval's ``prefix_token_id`` does.

The model sees ``(context + continuation)[:-1]`` (left-truncated to the model's context length),
right-padded so no attention mask or position shift is needed for a causal model, and the score is
the sum of ``log_softmax`` over the continuation tokens. Requests are run longest first, in a fixed
order, so repeated runs see identical batches and give identical numbers.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from core.eval.runtime import deterministic, eval_mode, resolve_device

DEFAULT_MAX_LENGTH = 2048


@dataclass(frozen=True)
class Loglikelihood:
    """Sum of continuation log-probabilities, and whether greedy decoding would produce it."""

    logprob: float
    is_greedy: bool
    n_tokens: int


def prefix_token_id(tokenizer: Any) -> int:
    """The token lm-eval conditions on when the context is empty: BOS if there is one, else EOS."""
    for name in ("bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise ValueError("tokenizer has neither a BOS nor an EOS token for empty contexts")


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair`` for causal models (see the module docstring)."""
    if context == "":
        cont = tokenizer.encode(continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if cont[:1] != [prefix] else (cont[:1], cont[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx) :]


def max_length_of(model: torch.nn.Module) -> int:
    """The model's context length, found where lm-eval looks for it."""
    config = getattr(model, "config", None)
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(config, attr, None)
        if value:
            return int(value)
    return DEFAULT_MAX_LENGTH


def _supports_logits_to_keep(model: torch.nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def _score_batch(
    model: torch.nn.Module,
    rows: Sequence[tuple[list[int], list[int]]],
    device: torch.device,
    pad_id: int,
    keep_logits: bool,
) -> list[Loglikelihood]:
    """One right-padded forward pass; only the logits covering continuations are materialised."""
    inputs = [ids for ids, _ in rows]
    width = max(len(ids) for ids in inputs)
    batch = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(inputs):
        batch[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    # positions predicting continuation tokens of row r: [len(ids) - n_cont, len(ids))
    keep = max(width - (len(ids) - len(cont)) for ids, cont in rows)
    kwargs: dict[str, Any] = {"use_cache": False}
    if keep_logits:
        kwargs["logits_to_keep"] = keep
    logits = model(input_ids=batch.to(device), **kwargs).logits
    offset = width - logits.size(1)  # 0 when every position was returned
    results: list[Loglikelihood] = []
    for row, (ids, cont) in enumerate(rows):
        end = len(ids) - offset
        piece = logits[row, end - len(cont) : end, :].float()
        logprobs = F.log_softmax(piece, dim=-1)
        target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
        chosen = logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        greedy = bool((logprobs.argmax(dim=-1) == target).all())
        results.append(Loglikelihood(float(chosen.double().sum()), greedy, len(cont)))
    return results


def encode_requests(
    tokenizer: Any, requests: Sequence[tuple[str, str]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(model input, continuation tokens) per request, left-truncated like lm-eval."""
    rows: list[tuple[list[int], list[int]]] = []
    for context, continuation in requests:
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        cont = cont[-max_length:]
        rows.append(((ctx + cont)[-(max_length + 1) :][:-1], cont))
    return rows


def loglikelihoods(
    model: torch.nn.Module,
    tokenizer: Any,
    requests: Sequence[tuple[str, str]],
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    max_length: int | None = None,
) -> list[Loglikelihood]:
    """Log-likelihood of each ``(context, continuation)``, returned in request order."""
    if not requests:
        return []
    target = resolve_device(model, device)
    rows = encode_requests(tokenizer, requests, max_length or max_length_of(model))
    order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), i))
    pad_id = getattr(tokenizer, "pad_token_id", None)
    pad_id = prefix_token_id(tokenizer) if pad_id is None else int(pad_id)
    keep_logits = _supports_logits_to_keep(model)
    out: list[Loglikelihood | None] = [None] * len(rows)
    with eval_mode(model), deterministic():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            scored = _score_batch(model, [rows[i] for i in chunk], target, pad_id, keep_logits)
            for index, result in zip(chunk, scored, strict=True):
                out[index] = result
    return [result for result in out if result is not None]
