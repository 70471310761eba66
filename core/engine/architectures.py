"""How a family's config maps onto prunable structures and onto GispConfig (the family table: ``core.families``)."""

from __future__ import annotations

import logging

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from core.engine.modeling.configuration_gisp import GispConfig
from core.engine.modeling.modeling_gisp import GispForCausalLM, GispRotaryEmbedding
from core.engine.structures import Geometry
from core.errors import UnsupportedModelError
from core.families import Family, family_named

logger = logging.getLogger(__name__)

AutoConfig.register("gisp", GispConfig, exist_ok=True)
AutoModelForCausalLM.register(GispConfig, GispForCausalLM, exist_ok=True)


def family_of(config: PretrainedConfig) -> Family:
    return family_named(getattr(config, "model_type", None))


def geometry_of(config: PretrainedConfig) -> Geometry:
    family = family_of(config)
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    if heads % kv_heads:
        raise UnsupportedModelError(
            f"{heads} query heads do not divide into {kv_heads} KV heads", field="model"
        )
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // heads)
    return Geometry(
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        head_dim=head_dim,
        num_heads=heads,
        num_kv_heads=kv_heads,
        intermediate_size=int(config.intermediate_size),
        qkv_bias=family.qkv_bias(config),
        o_bias=family.o_bias(config),
        mlp_bias=family.mlp_bias(config),
        down_bias=family.mlp_bias(config),
        qk_norm=family.qk_norm,
    )


def _rope_parameters(config: PretrainedConfig) -> dict:
    rope = getattr(config, "rope_parameters", None)
    if rope:
        return dict(rope)
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.pop("type", "default"))
    scaling["rope_theta"] = getattr(config, "rope_theta", 10000.0)
    return scaling


def gisp_config_from(config: PretrainedConfig) -> GispConfig:
    """The dense model's shapes as a GispConfig, the starting point that pruning then shrinks."""
    family = family_of(config)
    g = geometry_of(config)
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        logger.info(
            "%s uses a sliding window of %s tokens; pruned checkpoints attend over the full context",
            family.model_type,
            config.sliding_window,
        )
    return GispConfig(
        vocab_size=config.vocab_size,
        hidden_size=g.hidden_size,
        num_hidden_layers=g.num_layers,
        head_dim=g.head_dim,
        num_attention_heads=[g.num_heads] * g.num_layers,
        num_key_value_heads=[g.num_kv_heads] * g.num_layers,
        kv_head_of_query=[[h // g.group_size for h in range(g.num_heads)] for _ in range(g.num_layers)],
        intermediate_size=[g.intermediate_size] * g.num_layers,
        hidden_act=getattr(config, "hidden_act", "silu"),
        rms_norm_eps=config.rms_norm_eps,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters=_rope_parameters(config),
        attention_bias=g.qkv_bias,
        o_proj_bias=g.o_bias,
        mlp_bias=g.mlp_bias,
        down_proj_bias=g.down_bias,
        qk_norm=g.qk_norm,
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        bos_token_id=getattr(config, "bos_token_id", None),
        eos_token_id=getattr(config, "eos_token_id", None),
        pad_token_id=getattr(config, "pad_token_id", None),
        source_model_type=family.model_type,
    )


def to_gisp_model(model: PreTrainedModel, *, copy: bool = False) -> GispForCausalLM:
    """The same network as a GispForCausalLM, sharing the base model's weight tensors unless ``copy``.

    Sharing costs no memory; slicing replaces tensors rather than writing into them, so the base stays intact.
    """
    config = gisp_config_from(model.config)
    with torch.device("meta"):
        gisp = GispForCausalLM(config)
    state = model.state_dict()
    if copy:
        state = {name: tensor.clone() for name, tensor in state.items()}
    missing, unexpected = gisp.load_state_dict(state, strict=False, assign=True)
    missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise UnsupportedModelError(
            f"weights do not match the {config.source_model_type} layout: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}",
            field="model",
        )
    if config.tie_word_embeddings:
        gisp.tie_weights()
    _rebuild_buffers(gisp, device=next(model.parameters()).device)
    return gisp.to(model.dtype).eval()


def _rebuild_buffers(model: GispForCausalLM, device: torch.device) -> None:
    """Non-persistent buffers are not in a state dict: compute them for the meta-built model."""
    config = model.config
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.kv_index = torch.tensor(
            config.kv_head_of_query[index], dtype=torch.long, device=device
        )
    model.model.rotary_emb = GispRotaryEmbedding(config, device=device)


def stock_config_for_uniform(
    base: PretrainedConfig, heads: int, kv_heads: int, channels: int
) -> PretrainedConfig:
    """The base family's own config with equal, smaller sizes in every layer (loads with no custom code)."""
    values = base.to_dict()
    values.pop("quantization_config", None)
    values.update(
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=channels,
        head_dim=geometry_of(base).head_dim,
    )
    return base.__class__.from_dict(values)  # the family's own validators run here
