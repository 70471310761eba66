"""The checkpoint's own tokenizer (``tokenizer.json`` and its config) as GGUF vocabulary metadata.

llama.cpp tokenizes by itself, so the GGUF must carry the token list, their types, the BPE merges, the special ids,
the chat template and the name of the pre-tokenizer (the regex llama.cpp splits text with before BPE). The name is
read off the tokenizer's own pre-tokenizer description, never guessed from the model name; a tokenizer that is not
byte-level BPE (SentencePiece, WordPiece) is refused rather than written wrong.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gguf import GGUFWriter, SpecialVocab, TokenType

from core.errors import UserInputError


def add_vocab(writer: GGUFWriter, directory: Path, vocab_size: int) -> None:
    """Writes the tokenizer of ``directory`` for a model whose embedding has ``vocab_size`` rows."""
    path = directory / "tokenizer.json"
    if not path.is_file():
        raise UserInputError(f"{directory} has no tokenizer.json", field="checkpoint")
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE" or not _byte_level(data):
        raise UserInputError(
            "only byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2, SmolLM2 style) export to GGUF; this one is "
            f"{model.get('type')}",
            field="checkpoint",
        )
    tokens, types = _tokens(model["vocab"], data.get("added_tokens") or [], vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(data.get("pre_tokenizer")))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = SpecialVocab(directory, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(writer, quiet=True)


def _byte_level(data: dict[str, Any]) -> bool:
    text = json.dumps([data.get("pre_tokenizer"), data.get("decoder")])
    return '"ByteLevel"' in text


def _tokens(
    vocab: dict[str, int], added: list[dict[str, Any]], vocab_size: int
) -> tuple[list[str], list[int]]:
    size = max(vocab_size, *(i + 1 for i in vocab.values()), *(t["id"] + 1 for t in added))
    tokens: list[str | None] = [None] * size
    types = [int(TokenType.UNUSED)] * size
    for token, index in vocab.items():
        tokens[index], types[index] = token, int(TokenType.NORMAL)
    for entry in added:
        tokens[entry["id"]] = entry["content"]
        types[entry["id"]] = int(TokenType.CONTROL if entry.get("special") else TokenType.USER_DEFINED)
    return [t if t is not None else f"[PAD{i}]" for i, t in enumerate(tokens)], types


def pre_tokenizer_name(pre: dict[str, Any] | None) -> str:
    """llama.cpp's name for the split a tokenizer.json pre-tokenizer describes.

    ``ByteLevel`` with its own regex is GPT-2's split; single digits first (``Digits``) then ``ByteLevel`` is
    SmolLM's; a ``Split`` regex taking digits one at a time is Qwen2's, three at a time Llama 3's.
    """
    description: dict[str, Any] = pre or {}
    steps: list[dict[str, Any]] = (
        list(description.get("pretokenizers") or [])
        if description.get("type") == "Sequence"
        else [description]
        if description
        else []
    )
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits"):
        return "smollm"
    if kinds and kinds[0] == "Split":
        pattern = json.dumps(steps[0].get("pattern"))
        if "\\\\p{N}{1,3}" in pattern:
            return "llama-bpe"
        if "\\\\p{N}" in pattern:
            return "qwen2"
    return "default"
