"""Tiny random models of every supported family, and a tokenizer built offline, for fast engine tests."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from core.engine.loading import LoadedModel

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes attention heads and MLP channels from a trained language model.",
    "Question: What is two plus two?\nAnswer: four",
    "A small model answers quickly; a large model answers well.",
] * 4

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>"
    )


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
    config_class, model_class = FAMILIES[family]
    config = config_class(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # trained-looking scale differences, so scores are not all alike
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and ".layers." in name:
                parameter.mul_(1 + torch.rand(parameter.shape[0], 1) * 3)
    return model


def build_loaded(family: str = "llama", *, heads: int = 4, kv_heads: int = 2, layers: int = 4) -> LoadedModel:
    model = build_model(family, heads=heads, kv_heads=kv_heads, layers=layers)
    return LoadedModel(model, build_tokenizer(), {"id": f"tiny-{family}", "ref": None, "source": "test"})


@pytest.fixture
def calibration_text() -> list:
    from core.data.calibration import TextItem

    return [TextItem(text=" ".join(CORPUS))]
