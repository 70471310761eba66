"""Configuration of a GISP-pruned decoder-only transformer.

Pruning removes a different number of attention heads and MLP channels from every layer, so the head counts, the
key/value grouping and the MLP width are stored per layer. This file is shipped next to every pruned checkpoint and
loaded through `auto_map`, so it may only depend on `transformers`.

In `config.json` the per-layer sizes live under `gisp_layers`, and `model_type` names the family that was pruned
(`llama`, `qwen2`, ...). Transformers asks "Do you wish to run the custom code?" for any folder whose `model_type`
it does not know, even when only the tokenizer is loaded; with a known family it loads the tokenizer silently, as
for the base model. The family's own size fields hold values its stock config accepts but these weights never
fit (an MLP one channel wider than any layer's), so loading the weights without this code
(`trust_remote_code=True`) fails at the first layer instead of building a wrong model.
"""

import json

from transformers import PretrainedConfig

PER_LAYER = ("num_attention_heads", "num_key_value_heads", "intermediate_size", "kv_head_of_query")


def _per_layer(name: str, value, num_layers: int) -> list:
    """Broadcasts a scalar to one value per layer, and checks the length of a list."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value] * num_layers
    values = list(value)
    if len(values) != num_layers:
        raise ValueError(
            f"`{name}` must have one entry per layer ({num_layers}), got {len(values)}: {values}"
        )
    if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in values):
        raise ValueError(f"`{name}` must hold non-negative integers, got {values}")
    return values


class GispConfig(PretrainedConfig):
    r"""
    Configuration of a [`GispForCausalLM`]: a Llama-style decoder whose layers may each keep a different set of
    attention heads and MLP channels.

    Args:
        vocab_size (`int`): Size of the vocabulary.
        hidden_size (`int`): Width of the residual stream.
        num_hidden_layers (`int`): Number of decoder layers.
        head_dim (`int`): Width of one attention head; the same for every layer.
        num_attention_heads (`int` or `list[int]`): Query heads kept in each layer (0 allowed).
        num_key_value_heads (`int` or `list[int]`): Key/value heads kept in each layer.
        kv_head_of_query (`list[list[int]]`, *optional*): For layer `l`, query head `i` reads key/value head
            `kv_head_of_query[l][i]`, an index into that layer's kept key/value heads. Defaults to the uniform
            grouped-query layout `i // (num_attention_heads[l] // num_key_value_heads[l])`.
        intermediate_size (`int` or `list[int]`): MLP channels kept in each layer (0 allowed).
        hidden_act (`str`): Activation of the gated MLP.
        rms_norm_eps (`float`): Epsilon of the RMS norms.
        max_position_embeddings (`int`): Longest sequence the rotary embedding is set up for.
        rope_parameters (`dict`, *optional*): Rotary embedding parameters as transformers 5 stores them, e.g.
            `{"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, ...}`.
        attention_bias (`bool`): Bias on the query/key/value projections (Qwen2).
        o_proj_bias (`bool`): Bias on the attention output projection; pruning may add one to compensate for
            removed heads.
        mlp_bias (`bool`): Bias on the gate/up projections.
        down_proj_bias (`bool`): Bias on the MLP down projection; pruning may add one to compensate for removed
            channels.
        qk_norm (`bool`): RMS norm over `head_dim` on every query and key head before the rotary embedding (Qwen3).
        tie_word_embeddings (`bool`): Whether the LM head shares the input embedding matrix.
        initializer_range (`float`): Standard deviation of the normal weight initialisation.
        use_cache (`bool`): Whether the model returns a key/value cache by default.
        source_model_type (`str`): `model_type` of the model that was pruned, e.g. `"llama"`.
        attention_dropout (`float`): Dropout on the attention probabilities during training.
    """

    model_type = "gisp"

    def __init__(
        self,
        vocab_size: int = 128,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        head_dim: int = 16,
        num_attention_heads: int | list[int] = 4,
        num_key_value_heads: int | list[int] = 2,
        kv_head_of_query: list[list[int]] | None = None,
        intermediate_size: int | list[int] = 96,
        hidden_act: str = "silu",
        rms_norm_eps: float = 1e-6,
        max_position_embeddings: int = 2048,
        rope_parameters: dict | None = None,
        attention_bias: bool = False,
        o_proj_bias: bool = False,
        mlp_bias: bool = False,
        down_proj_bias: bool = False,
        qk_norm: bool = False,
        tie_word_embeddings: bool = False,
        bos_token_id: int | None = None,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        initializer_range: float = 0.02,
        use_cache: bool = True,
        source_model_type: str = "llama",
        attention_dropout: float = 0.0,
        gisp_layers: dict | None = None,
        **kwargs,
    ):
        kwargs.pop("model_type", None)  # a config.json names the pruned family there; this class is "gisp"
        if gisp_layers is not None:  # the config.json layout: the per-layer sizes under their own key
            missing = [
                name for name in PER_LAYER[:3] if not isinstance(gisp_layers, dict) or name not in gisp_layers
            ]
            if missing:
                raise ValueError(
                    f"`gisp_layers` must be a mapping holding {list(PER_LAYER)}; missing {missing}"
                )
            num_attention_heads = gisp_layers["num_attention_heads"]
            num_key_value_heads = gisp_layers["num_key_value_heads"]
            intermediate_size = gisp_layers["intermediate_size"]
            kv_head_of_query = gisp_layers.get("kv_head_of_query")
        _check_shape(num_hidden_layers, head_dim)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.head_dim = head_dim
        self.num_attention_heads = _per_layer("num_attention_heads", num_attention_heads, num_hidden_layers)
        self.num_key_value_heads = _per_layer("num_key_value_heads", num_key_value_heads, num_hidden_layers)
        self.kv_head_of_query = _kv_groups(
            kv_head_of_query, self.num_attention_heads, self.num_key_value_heads
        )
        self.intermediate_size = _per_layer("intermediate_size", intermediate_size, num_hidden_layers)
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        self.max_position_embeddings = max_position_embeddings
        self.rope_parameters = _rope(rope_parameters, kwargs)
        self.attention_bias = attention_bias
        self.o_proj_bias = o_proj_bias
        self.mlp_bias = mlp_bias
        self.down_proj_bias = down_proj_bias
        self.qk_norm = qk_norm
        self.initializer_range = initializer_range
        self.use_cache = use_cache
        self.source_model_type = source_model_type
        self.attention_dropout = attention_dropout
        super().__init__(
            tie_word_embeddings=tie_word_embeddings,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            **kwargs,
        )

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Reads a config.json written by `to_json_string` (or an older one with `model_type: gisp`)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if "gisp_layers" in config_dict:  # whatever it holds: __init__ checks it
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    def to_json_string(self, use_diff: bool = True) -> str:
        """config.json: every layer's sizes under `gisp_layers`; the family's fields refuse the weights."""
        config_dict = self.to_diff_dict() if use_diff else self.to_dict()
        config_dict = self._encode_special_floats(config_dict)
        config_dict["gisp_layers"] = {name: getattr(self, name) for name in PER_LAYER}
        config_dict.pop("kv_head_of_query", None)
        # Heads the family's config accepts (Llama's requires hidden_size % heads == 0), and an MLP one channel
        # wider than any layer's: the stock class of the family can never take these weights.
        heads = self.hidden_size // self.head_dim if self.hidden_size % self.head_dim == 0 else 1
        config_dict["num_attention_heads"] = config_dict["num_key_value_heads"] = heads
        config_dict["intermediate_size"] = max([0, *self.intermediate_size]) + 1
        config_dict["model_type"] = self.source_model_type
        return json.dumps(config_dict, indent=2, sort_keys=True) + "\n"


def _check_shape(num_hidden_layers: int, head_dim: int) -> None:
    if num_hidden_layers < 0:
        raise ValueError(f"`num_hidden_layers` must be >= 0, got {num_hidden_layers}")
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"`head_dim` must be a positive even number (rotary embedding), got {head_dim}")


def _kv_groups(
    kv_head_of_query: list[list[int]] | None, num_attention_heads: list[int], num_key_value_heads: list[int]
) -> list[list[int]]:
    """Each layer's key/value head of every query head: checked, or the even split when not given."""
    if kv_head_of_query is None:
        return [
            _uniform_kv_groups(layer, heads, kv_heads)
            for layer, (heads, kv_heads) in enumerate(zip(num_attention_heads, num_key_value_heads))
        ]
    kv_head_of_query = [list(groups) for groups in kv_head_of_query]
    if len(kv_head_of_query) != len(num_attention_heads):
        raise ValueError(
            f"`kv_head_of_query` must have one entry per layer ({len(num_attention_heads)}), "
            f"got {len(kv_head_of_query)}"
        )
    for layer, (groups, heads, kv_heads) in enumerate(
        zip(kv_head_of_query, num_attention_heads, num_key_value_heads)
    ):
        if len(groups) != heads:
            raise ValueError(
                f"`kv_head_of_query[{layer}]` must name a key/value head for each of the {heads} query heads, "
                f"got {len(groups)}: {groups}"
            )
        if any(not isinstance(g, int) or not 0 <= g < kv_heads for g in groups):
            raise ValueError(
                f"`kv_head_of_query[{layer}]` must index the layer's {kv_heads} key/value heads, got {groups}"
            )
    return kv_head_of_query


def _rope(rope_parameters: dict | None, kwargs: dict) -> dict:
    """The rotary embedding's parameters; older configs give ``rope_theta`` (or ``type``) at the top level."""
    if rope_parameters is None:
        rope_parameters = {"rope_type": "default", "rope_theta": kwargs.pop("rope_theta", 10000.0)}
    rope_parameters = dict(rope_parameters)
    rope_parameters.setdefault("rope_type", rope_parameters.pop("type", "default"))
    if "rope_theta" not in rope_parameters:
        raise ValueError(f"`rope_parameters` must contain `rope_theta`, got {rope_parameters}")
    return rope_parameters


def _uniform_kv_groups(layer: int, heads: int, kv_heads: int) -> list[int]:
    if heads == 0:
        return []
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(
            f"layer {layer}: {heads} query heads cannot be split evenly over {kv_heads} key/value heads; "
            "pass `kv_head_of_query` explicitly"
        )
    group = heads // kv_heads
    return [i // group for i in range(heads)]


__all__ = ["GispConfig"]
