"""Tiny, offline stand-ins for a real model: a byte-level BPE tokenizer and a random Llama."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

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
    """A byte-level BPE (GPT-2 style leading-space merges) with a BOS added to every encoding."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(SENTENCES * 3, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_model(vocab_size: int, seed: int = 0, init: float = 0.3, context: int = 2048) -> LlamaForCausalLM:
    """2 layers, hidden 64, 4 heads (2 KV heads); a large init so options do not tie."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        initializer_range=init,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session")
def model(tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    return build_model(len(tokenizer))
