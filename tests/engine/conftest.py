"""Tiny random models of every supported family, and a tokenizer built offline, for fast engine tests."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from core.engine.loading import LoadedModel
from tests.utils.tiny import CORPUS, FAMILIES, bpe_tokenizer, tiny_model

__all__ = ["CORPUS", "FAMILIES", "build_loaded", "build_model", "build_tokenizer"]


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
