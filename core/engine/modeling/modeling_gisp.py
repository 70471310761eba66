"""Decoder-only transformer whose layers keep different numbers of attention heads and MLP channels.

A structurally pruned Llama/Mistral/Qwen2/Qwen3 no longer fits the stock classes, whose layers all have the same
shapes. This file is shipped beside every pruned checkpoint and registered through `auto_map`, so that
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` loads it on stock transformers; it therefore
imports only torch, public transformers modules and its sibling configuration file.

The pruning engine runs the same classes while it slices the projections in place, so every size (heads, key/value
heads, MLP channels) is read from the module weights at call time and never cached from the configuration.
"""

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from transformers.modeling_utils import PreTrainedModel

from .configuration_gisp import GispConfig

# transformers renamed the cache field of the model outputs from `past_key_values` to `cache` during 5.x; the old
# name still works through a shim that logs a deprecation warning, so write whichever name this version declares.
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"

# `enable_gqa` (torch 2.5+) lets SDPA read a key/value head for each group of query heads without copying it.
_SDPA_GROUPS = tuple(int(part) for part in torch.__version__.split(".")[:2]) >= (2, 5)


class GispRMSNorm(nn.Module):
    """Root-mean-square layer norm, computed in float32 as in Llama."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class GispRotaryEmbedding(nn.Module):
    """Rotary position embedding shared by all layers; scaled variants come from `ROPE_INIT_FUNCTIONS`."""

    def __init__(self, config: GispConfig, device: torch.device | None = None):
        super().__init__()
        self.config = config
        self.rope_type = config.rope_parameters["rope_type"]
        # Read by `dynamic_rope_update` for the "dynamic" and "longrope" types.
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings

        inv_freq, self.attention_scaling = self.compute_inv_freq(config, device)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(
        config: GispConfig, device: torch.device | None = None, seq_len: int | None = None, **kwargs
    ) -> tuple[torch.Tensor, float]:
        base = config.rope_parameters["rope_theta"]
        dim = config.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim
        return 1.0 / (base**exponents), 1.0

    def compute_inv_freq(
        self, config: GispConfig, device: torch.device | None = None
    ) -> tuple[torch.Tensor, float]:
        if self.rope_type == "default":
            return self.compute_default_rope_parameters(config, device)
        return ROPE_INIT_FUNCTIONS[self.rope_type](config, device)

    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq.to(device=x.device, dtype=torch.float)
        freqs = position_ids[..., None].float() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotates `(batch, heads, seq, head_dim)` queries and keys by `(batch, seq, head_dim)` angles."""
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class GispAttention(nn.Module):
    """Self-attention in which query heads share key/value heads in arbitrary groups.

    Pruning drops query heads one by one, so the groups of a grouped-query layer stop being uniform (one key/value
    head may serve three query heads and another a single one). The non-persistent buffer `kv_index` names, for each
    query head, the key/value head it reads; it is rebuilt from `config.kv_head_of_query` when the model loads.
    """

    def __init__(self, config: GispConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout

        heads = config.num_attention_heads[layer_idx]
        kv_heads = config.num_key_value_heads[layer_idx]
        self.q_proj = nn.Linear(config.hidden_size, heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_heads * self.head_dim, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_heads * self.head_dim, bias=config.attention_bias)
        self.o_proj = nn.Linear(heads * self.head_dim, config.hidden_size, bias=config.o_proj_bias)
        if config.qk_norm:
            self.q_norm = GispRMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = GispRMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.register_buffer(
            "kv_index", torch.tensor(config.kv_head_of_query[layer_idx], dtype=torch.long), persistent=False
        )

    @property
    def num_heads(self) -> int:
        return self.q_proj.out_features // self.head_dim

    def kv_layout(self) -> str:
        """How the query heads read the key/value heads, worked out once per `kv_index` tensor.

        "own": query head i reads key/value head i (multi-head attention, or one reader left per group): no gather.
        "groups": equal groups of consecutive query heads (an unpruned or uniformly pruned GQA layer): SDPA reads
        each key/value head for its group without copying it. "gather": anything else, which pruning makes; each
        query head's key/value head is picked from the cache, one copy per call. Slicing and `.to()` replace the
        buffer, so the cached answer never outlives the tensor it was computed from.
        """
        if getattr(self, "_layout_of", None) is not self.kv_index:
            index = self.kv_index.tolist()
            heads, kv_heads = len(index), self.num_key_value_heads
            group = heads // kv_heads if kv_heads and heads % kv_heads == 0 else 0
            if heads == kv_heads and index == list(range(heads)):
                layout = "own"
            elif _SDPA_GROUPS and group and index == [h // group for h in range(heads)]:
                layout = "groups"
            else:
                layout = "gather"
            self._layout_of, self._layout = self.kv_index, layout
        return self._layout

    @property
    def num_key_value_heads(self) -> int:
        return self.k_proj.out_features // self.head_dim

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        """`attention_mask` is a `(batch, 1, query, key)` mask, or `None` for plain causal attention without a
        cache prefix."""
        batch, q_len, _ = hidden_states.shape
        heads, kv_heads = self.num_heads, self.num_key_value_heads
        if heads == 0:
            if cache is not None:
                self._record_length_only(cache, hidden_states)
            # The output projection of zero heads still adds its (compensation) bias, if any.
            return self.o_proj(hidden_states.new_zeros(batch, q_len, 0))
        if self.kv_index.numel() != heads:
            raise RuntimeError(
                f"layer {self.layer_idx}: kv_index names {self.kv_index.numel()} query heads but q_proj has {heads}"
            )

        query = self.q_proj(hidden_states).view(batch, q_len, heads, self.head_dim)
        key = self.k_proj(hidden_states).view(batch, q_len, kv_heads, self.head_dim)
        value = self.v_proj(hidden_states).view(batch, q_len, kv_heads, self.head_dim).transpose(1, 2)
        if self.config.qk_norm:
            query = self.q_norm(query)
            key = self.k_norm(key)
        cos, sin = position_embeddings
        query, key = apply_rotary_pos_emb(query.transpose(1, 2), key.transpose(1, 2), cos, sin)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)

        # The cache keeps only the kept key/value heads; each query head reads its own (see `kv_layout`).
        layout = self.kv_layout()
        if layout == "gather":
            key = key.index_select(1, self.kv_index)
            value = value.index_select(1, self.kv_index)
        grouped = {"enable_gqa": True} if layout == "groups" else {}
        sees_a_key = None
        if attention_mask is not None and attention_mask.dtype == torch.bool:
            # A left-padding query sees no key at all. Depending on the torch version and backend SDPA returns NaN
            # for it, which later layers spread to real tokens through `0 * NaN`; give it a zero output instead,
            # as recent torch does, by letting it attend everywhere and then clearing the result.
            sees_a_key = attention_mask.any(dim=-1, keepdim=True)
            attention_mask = attention_mask | ~sees_a_key
        attn_output = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            is_causal=attention_mask is None and q_len > 1,
            scale=self.scaling,
            **grouped,
        )
        if sees_a_key is not None:
            attn_output = attn_output * sees_a_key
        attn_output = attn_output.transpose(1, 2).reshape(batch, q_len, heads * self.head_dim)
        return self.o_proj(attn_output)

    def _record_length_only(self, cache: Cache, hidden_states: torch.Tensor) -> None:
        """Keeps the cache length of a head-less layer in step with the others.

        `DynamicCache.get_seq_length()` reads layer 0 and reports 0 for an empty tensor, so a `(batch, 0, seq, dim)`
        entry would make a model whose first layer lost all its heads forget its past. One zero per token costs
        nothing and keeps the length right.
        """
        batch, q_len, _ = hidden_states.shape
        placeholder = hidden_states.new_zeros(batch, 1, q_len, 1)
        cache.update(placeholder, placeholder, self.layer_idx)


class GispMLP(nn.Module):
    """Gated MLP `down(act(gate(x)) * up(x))`; with zero channels it returns the down-projection bias (or zeros)."""

    def __init__(self, config: GispConfig, layer_idx: int):
        super().__init__()
        width = config.intermediate_size[layer_idx]
        self.gate_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
        self.up_proj = nn.Linear(config.hidden_size, width, bias=config.mlp_bias)
        self.down_proj = nn.Linear(width, config.hidden_size, bias=config.down_proj_bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class GispDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm residual block: attention, then MLP."""

    def __init__(self, config: GispConfig, layer_idx: int):
        super().__init__()
        self.self_attn = GispAttention(config, layer_idx)
        self.mlp = GispMLP(config, layer_idx)
        self.input_layernorm = GispRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = GispRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states = self.self_attn(
            hidden_states, position_embeddings, attention_mask=attention_mask, cache=cache
        )
        hidden_states = residual + hidden_states

        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class GispPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the class attributes transformers reads to load, place and checkpoint."""

    config_class = GispConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["GispDecoderLayer"]  # noqa: RUF012  (transformers reads it as a plain class attribute)
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            if module.weight.numel():
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            # transformers guards `nn.init` against overwriting loaded weights, but not a plain slice write.
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, GispRMSNorm):
            nn.init.ones_(module.weight)
        # Non-persistent buffers are not in the checkpoint: from_pretrained builds the model on the meta device and
        # leaves them uninitialised until this runs.
        elif isinstance(module, GispRotaryEmbedding):
            inv_freq, _ = module.compute_inv_freq(module.config, module.inv_freq.device)
            module.inv_freq.copy_(inv_freq)
            module.original_inv_freq.copy_(inv_freq)
        elif isinstance(module, GispAttention):
            kv_index = self.config.kv_head_of_query[module.layer_idx]
            module.kv_index.copy_(torch.tensor(kv_index, dtype=torch.long, device=module.kv_index.device))


def _single_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """Accepts the cache under either name: transformers 5.0 passes `past_key_values`, later 5.x `cache`."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the key/value cache as `cache` or `past_key_values`, not both.")
    cache = cache if cache is not None else past_key_values
    if cache is not None and not isinstance(cache, Cache):
        raise TypeError(f"The key/value cache must be a transformers `Cache`, got {type(cache).__name__}.")
    return cache


def build_attention_mask(
    attention_mask: torch.Tensor | None, cache_position: torch.Tensor, kv_length: int
) -> torch.Tensor | None:
    """Boolean `(batch, 1, query, key)` mask for SDPA, `None` when plain causal attention is enough.

    Query `i` sees key `j` when `j <= cache_position[i]` (causal over absolute positions in the cache) and the 2D
    padding mask, which covers the past and current keys, keeps `j`. A 4D mask is taken as already built. Without
    padding, a prompt needs no mask (SDPA's causal flag) and neither does one new token after the cache (it sees
    every key): SDPA then picks its fused kernels, which an explicit mask rules out on GPUs.
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask
    q_len = cache_position.shape[0]
    past_length = kv_length - q_len
    if attention_mask is not None and attention_mask.shape[-1] != kv_length:
        raise ValueError(
            f"The 2D attention_mask covers {attention_mask.shape[-1]} tokens but there are {kv_length} "
            f"keys ({past_length} cached + {q_len} new)."
        )
    if (past_length == 0 or q_len == 1) and (attention_mask is None or bool(attention_mask.all())):
        return None

    key_positions = torch.arange(kv_length, device=cache_position.device)
    mask = (key_positions[None, :] <= cache_position[:, None])[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask[:, None, None, :].to(device=mask.device, dtype=torch.bool)
    return mask


class GispModel(GispPreTrainedModel):
    """Embeddings, decoder layers and final norm, without the LM head."""

    def __init__(self, config: GispConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [GispDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = GispRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = GispRotaryEmbedding(config)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        cache_position: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        cache = _single_cache(cache, past_key_values)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if self.gradient_checkpointing and self.training:
            # Recomputing a layer in the backward pass would append its keys to the cache a second time.
            use_cache, cache = False, None
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        q_len = inputs_embeds.shape[1]
        past_length = cache.get_seq_length() if cache is not None else 0
        if cache_position is None:
            cache_position = torch.arange(past_length, past_length + q_len, device=inputs_embeds.device)
        if position_ids is None:
            position_ids = cache_position.unsqueeze(0)
        mask = build_attention_mask(attention_mask, cache_position, past_length + q_len)

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        all_hidden_states = () if output_hidden_states else None
        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            hidden_states = decoder_layer(
                hidden_states, position_embeddings=position_embeddings, attention_mask=mask, cache=cache
            )
        hidden_states = self.norm(hidden_states)
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, **{_CACHE_FIELD: cache}
        )


class GispForCausalLM(GispPreTrainedModel, GenerationMixin):
    """`GispModel` with a language-modelling head; what `AutoModelForCausalLM` loads for a pruned checkpoint."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}  # noqa: RUF012

    def __init__(self, config: GispConfig):
        super().__init__(config)
        self.model = GispModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        cache: Cache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
        """Causal-LM forward; `labels` give the shifted cross-entropy (`-100` ignored).

        `cache_position` is accepted through `kwargs` (transformers 5.0 passes it) rather than declared: later
        5.x versions warn about remote code whose `forward` declares it. When absent it is derived from the cache.
        """
        return_dict = kwargs.pop("return_dict", None)
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=_single_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            cache_position=kwargs.pop("cache_position", None),
            output_hidden_states=kwargs.pop("output_hidden_states", None),
        )

        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )

        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            **{_CACHE_FIELD: getattr(outputs, _CACHE_FIELD)},
        )
        return output if return_dict is not False else output.to_tuple()


__all__ = ["GispForCausalLM", "GispModel", "GispPreTrainedModel"]
