"""Tiny, offline stand-ins for a real model: a byte-level BPE tokenizer and a random Llama."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from tests.utils.tiny import bpe_tokenizer, tiny_model

# tiny models gain nothing from intra-op threads, and several test processes may share the cores
torch.set_num_threads(1)

SENTENCES = [
    "Question: Which factor will most likely cause a person to develop a fever?\nAnswer: a bacterial population",
    "Sarah was a much better surgeon than Maria so Maria always got the harder cases.",
    "Roof shingle removal: A man is sitting on a roof. He starts pulling up roofing on a roof.",
    "Ethanol fuel -- All biomass goes through at least some of these steps.\nQuestion: is it?\nAnswer: yes no",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. #### 72",
    " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor .",
    "The sun is responsible for plants sprouting, blooming and wilting. 1,600 + 24 = 1624.",
]


def build_tokenizer(vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE with a BOS added to every encoding, as Llama tokenizers do."""
    return bpe_tokenizer(
        SENTENCES * 3,
        vocab_size=vocab_size,
        special_tokens=("<s>", "</s>", "<pad>"),
        pad_token="<pad>",
        prepend_bos=True,
    )


def build_model(vocab_size: int, seed: int = 0, init: float = 0.3, context: int = 2048) -> LlamaForCausalLM:
    """2 layers, hidden 64, 4 heads (2 KV heads); a large init so options do not tie."""
    model = tiny_model(
        layers=2,
        vocab=vocab_size,
        intermediate=128,
        seed=seed,
        uneven_scales=False,
        initializer_range=init,
        context=context,
        special_ids=None,
    )
    assert isinstance(model, LlamaForCausalLM)
    return model


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_model(len(tokenizer))
