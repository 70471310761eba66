"""A checkpoint folder read back as plain per-layer facts and float32 arrays, whatever its layout.

Both layouts a job writes land here: the non-uniform one (sizes per layer under ``gisp_layers`` in the config) and
the uniform one (the base family's stock config, equal sizes). The exporters below read only this description, so
they never branch on which file format the sizes came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from core.errors import UserInputError
from core.families import family_named, flat_pruned_config

STOCK_TYPES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass(frozen=True)
class LayerShape:
    """One decoder layer: query head ``i`` reads key/value head ``kv_of_query[i]`` (uneven groups allowed)."""

    kv_of_query: list[int]
    kv_heads: int
    channels: int

    @property
    def heads(self) -> int:
        return len(self.kv_of_query)


@dataclass
class Checkpoint:
    """Sizes, hyperparameters and weights (float32, PyTorch's ``(out, in)`` orientation) of one checkpoint."""

    directory: Path
    source_type: str  # the pruned family: llama, mistral, qwen2, qwen3
    uniform: bool  # saved with the family's stock config (equal sizes, no custom code)
    hidden_size: int
    head_dim: int
    vocab_size: int
    context_length: int
    rms_norm_eps: float
    rope: dict[str, Any]
    tied_embeddings: bool
    qk_norm: bool
    layers: list[LayerShape]
    tensors: dict[str, np.ndarray] = field(repr=False)
    config: dict[str, Any] = field(repr=False)

    def tensor(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def optional(self, name: str) -> np.ndarray | None:
        return self.tensors.get(name)


def read_checkpoint(directory: str | Path) -> Checkpoint:
    """Reads ``config.json`` and every ``*.safetensors`` file of ``directory`` (no model code runs)."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserInputError(
            f"{directory} has no config.json; is it a checkpoint folder?", field="checkpoint"
        )
    config = flat_pruned_config(json.loads(config_path.read_text()))
    weights = sorted(directory.glob("*.safetensors"))
    if not weights:
        raise UserInputError(f"{directory} holds no .safetensors weights", field="checkpoint")
    tensors: dict[str, np.ndarray] = {}
    for path in weights:
        for name, value in load_file(str(path)).items():
            tensors[name] = value.to(torch.float32).numpy()
    model_type = config.get("model_type")
    if model_type == "gisp":
        source_type = str(config.get("source_model_type", "llama"))
        layers = _gisp_layers(config)
        uniform = False
    elif model_type in STOCK_TYPES:
        source_type = str(model_type)
        layers = _stock_layers(config)
        uniform = True
    else:
        raise UserInputError(
            f"cannot export model type '{model_type}'; supported: gisp (pruned) and {', '.join(STOCK_TYPES)}",
            field="checkpoint",
        )
    family = family_named(source_type)
    hidden = int(config["hidden_size"])
    heads0 = int(config["num_attention_heads"] if uniform else max(config["num_attention_heads"] + [1]))
    head_dim = int(config.get("head_dim") or hidden // heads0)
    return Checkpoint(
        directory=directory,
        source_type=source_type,
        uniform=uniform,
        hidden_size=hidden,
        head_dim=head_dim,
        vocab_size=int(config["vocab_size"]),
        context_length=int(config.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        rope=_rope(config),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)) or "lm_head.weight" not in tensors,
        qk_norm=bool(config.get("qk_norm", family.qk_norm)),
        layers=layers,
        tensors=tensors,
        config=config,
    )


def _gisp_layers(config: dict[str, Any]) -> list[LayerShape]:
    return [
        LayerShape(kv_of_query=list(groups), kv_heads=int(kv), channels=int(channels))
        for groups, kv, channels in zip(
            config["kv_head_of_query"], config["num_key_value_heads"], config["intermediate_size"]
        )
    ]


def _stock_layers(config: dict[str, Any]) -> list[LayerShape]:
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    group = heads // kv_heads
    layer = LayerShape([h // group for h in range(heads)], kv_heads, int(config["intermediate_size"]))
    return [layer] * int(config["num_hidden_layers"])


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_type", rope.pop("type", "default"))
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    return rope
