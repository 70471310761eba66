"""The model families the engine prunes, and the facts about each that pruning and export depend on.

Torch-free, so the API can decide what a job on a family can ask for (the engine's adapters in
``core.engine.architectures`` read the same table). Llama, Mistral, Qwen2 and Qwen3 share the decoder shape
the engine prunes (q/k/v/o attention with RoPE, gated MLP, RMSNorm); they differ in biases and Qwen3's
per-head q/k norms. Anything else is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import UnsupportedModelError


@dataclass(frozen=True)
class Family:
    """Bias and norm layout of one family's decoder, and what its stock (uniform) config can carry."""

    model_type: str
    qkv_bias_always: bool = False  # Qwen2: q/k/v always carry a bias, o_proj never
    o_bias_follows_attention_bias: bool = True
    qk_norm: bool = False
    # Whether the stock class can hold an o_proj / down_proj bias (through attention_bias / mlp_bias): a uniform
    # checkpoint needs one to carry bias compensation unless the refit fits weights alone.
    stock_output_biases: bool = True

    def qkv_bias(self, config: Any) -> bool:
        return self.qkv_bias_always or bool(getattr(config, "attention_bias", False))

    def o_bias(self, config: Any) -> bool:
        return self.o_bias_follows_attention_bias and bool(getattr(config, "attention_bias", False))

    def mlp_bias(self, config: Any) -> bool:
        return bool(getattr(config, "mlp_bias", False))


FAMILIES: dict[str, Family] = {
    "llama": Family("llama"),
    "mistral": Family("mistral", stock_output_biases=False),
    "qwen2": Family(
        "qwen2", qkv_bias_always=True, o_bias_follows_attention_bias=False, stock_output_biases=False
    ),
    "qwen3": Family("qwen3", qk_norm=True),
}


PRUNED_MODEL_TYPE = "gisp"


def declared_model_type(config: Mapping[str, Any]) -> Any:
    """A config.json's model type, ``"gisp"`` for a non-uniform pruned checkpoint.

    Such a checkpoint's ``model_type`` names the family it was pruned from (so stock transformers loads its
    tokenizer without asking about custom code) and its per-layer sizes sit under ``gisp_layers``; older ones
    say ``gisp`` directly.
    """
    if isinstance(config.get("gisp_layers"), dict):
        return PRUNED_MODEL_TYPE
    return config.get("model_type")


def flat_pruned_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """A pruned checkpoint's config.json with its per-layer sizes in the top-level fields (older layout)."""
    flat = dict(config)
    layers = flat.pop("gisp_layers", None)
    if isinstance(layers, dict):
        flat.update(layers)
        flat.setdefault("source_model_type", config.get("model_type"))
        flat["model_type"] = PRUNED_MODEL_TYPE
    return flat


def family_named(model_type: str | None) -> Family:
    """The family of a config's ``model_type``; an already pruned checkpoint or an unknown type is refused."""
    if model_type == PRUNED_MODEL_TYPE:
        raise UnsupportedModelError(
            "this is an already pruned GISP checkpoint; prune its base model instead", field="model"
        )
    family = FAMILIES.get(model_type or "")
    if family is None:
        supported = ", ".join(sorted(FAMILIES))
        raise UnsupportedModelError(
            f"architecture '{model_type}' is not supported; supported families: {supported}", field="model"
        )
    return family
