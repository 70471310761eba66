"""Tiny random models of every supported family and byte-level BPE tokenizers, built offline in seconds.

One builder for the whole suite: the engine tests use many shapes and families, the evaluation tests a
2-layer Llama with a larger init (so multiple-choice options do not tie), the service tests a Llama saved
to a folder the way an operator's model lies in GISP_MODELS_DIR.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

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


def bpe_tokenizer(
    corpus: Sequence[str] = CORPUS,
    *,
    vocab_size: int = 300,
    special_tokens: Sequence[str] = ("<unk>", "<s>", "</s>"),
    pad_token: str = "</s>",
    prepend_bos: bool = False,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style leading-space merges) trained on ``corpus``; ``<s>`` is BOS."""
    unk = "<unk>" if "<unk>" in special_tokens else None
    backend = Tokenizer(models.BPE(unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(corpus), trainer)
    if prepend_bos:
        bos = backend.token_to_id("<s>")
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    extra = {"unk_token": unk} if unk else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token=pad_token, **extra
    )


def tiny_model(
    family: str = "llama",
    *,
    heads: int = 4,
    kv_heads: int = 2,
    layers: int = 4,
    vocab: int = 300,
    intermediate: int = 96,
    seed: int = 0,
    uneven_scales: bool = True,
    initializer_range: float | None = None,
    context: int = 256,
    special_ids: tuple[int, int, int] | None = (1, 2, 2),
) -> PreTrainedModel:
    """A random model of ``family`` (hidden 64, head_dim 16).

    ``uneven_scales`` multiplies each decoder weight row by a random factor in [1, 4): trained-looking
    scale differences, so importance scores are not all alike. ``special_ids``: (bos, eos, pad) ids, or
    None for the family's defaults (no padding row in the embedding).
    """
    config_class, model_class = FAMILIES[family]
    extra: dict[str, object] = {} if initializer_range is None else {"initializer_range": initializer_range}
    if special_ids is not None:
        extra.update(zip(("bos_token_id", "eos_token_id", "pad_token_id"), special_ids))
    config = config_class(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=16,
        max_position_embeddings=context,
        tie_word_embeddings=False,
        **extra,
    )
    torch.manual_seed(seed)
    model = model_class(config).eval()
    if uneven_scales:
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.dim() == 2 and ".layers." in name:
                    parameter.mul_(1 + torch.rand(parameter.shape[0], 1) * 3)
    return model


def save_tiny_model(directory: Path, *, layers: int = 4, seed: int = 0) -> Path:
    """A tiny Llama and its tokenizer saved as safetensors, as a model lies in the operator's folder."""
    tokenizer = bpe_tokenizer()
    model = tiny_model(layers=layers, seed=seed, vocab=len(tokenizer), intermediate=128)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
