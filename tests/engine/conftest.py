"""Tiny random models of every supported family, and a tokenizer built offline, for fast engine tests."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from core.data.calibration import TextItem
from core.engine.loading import LoadedModel
from core.engine.pruner import prune as engine_prune
from core.pruning_spec import METHODS, Method, PruneSettings
from tests.utils.tiny import CORPUS, FAMILIES, bpe_tokenizer, tiny_model

ITEMS = [TextItem(text=" ".join(CORPUS))]

__all__ = [
    "BATCH",
    "CORPUS",
    "FAMILIES",
    "ITEMS",
    "build_loaded",
    "build_model",
    "build_tokenizer",
    "prune",
    "settings",
]

BATCH = 2  # sequences per micro-batch: two per step, so gradients accumulate across batches
prune = partial(engine_prune, batch_size=BATCH)


def settings(**overrides: Any) -> PruneSettings:
    """A small run (4 samples of 16 tokens, 4 steps for iterative methods) with ``overrides``."""
    values: dict[str, Any] = dict(sparsities=[0.2, 0.4], samples=4, seq_len=16)
    values.update(overrides)
    if METHODS[Method(values.get("method", Method.gisp))].iterative:
        values.setdefault("steps", 4)
    return PruneSettings(**values)


def build_tokenizer() -> PreTrainedTokenizerFast:
    return bpe_tokenizer()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


def build_model(
    family: str = "llama",
    *,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 4,
    vocab: int = 300,
    seed: int = 0,
) -> torch.nn.Module:
    return tiny_model(family, heads=heads, kv_heads=kv_heads, layers=layers, vocab=vocab, seed=seed)


def build_loaded(family: str = "llama", *, heads: int = 4, kv_heads: int = 2, layers: int = 4) -> LoadedModel:
    model = build_model(family, heads=heads, kv_heads=kv_heads, layers=layers)
    return LoadedModel(model, build_tokenizer(), {"id": f"tiny-{family}", "ref": None, "source": "test"})


@pytest.fixture
def calibration_text() -> list:
    from core.data.calibration import TextItem

    return [TextItem(text=" ".join(CORPUS))]
