"""The shipped GISP model code against the stock transformers models it replaces.

A pruned model is compared with the unpruned one whose removed heads and channels are masked out (their o_proj /
down_proj columns zeroed): both compute the same function, so logits must agree to float32 rounding.
"""

import ast
import copy
import json
import os

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    DynamicCache,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

from core.engine.modeling.configuration_gisp import GispConfig
from core.engine.modeling.modeling_gisp import GispForCausalLM, build_attention_mask

VOCAB, HIDDEN, HEAD_DIM, INTERMEDIATE = 128, 64, 16, 96
PAD = 0
ATOL = 1e-5

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}

FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}


def tiny_hf_model(
    family: str, heads: int = 4, kv_heads: int = 2, layers: int = 2, seed: int = 0, **overrides
):
    config_cls, model_cls = FAMILIES[family]
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=HEAD_DIM,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=PAD,
        tie_word_embeddings=False,
    )
    if family == "mistral":
        kwargs["sliding_window"] = None
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = model_cls(config_cls(**kwargs)).eval()
    # Default init (std 0.02, unit norms) leaves logits near zero, where any tolerance passes: spread the weights.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.normal_(1.0, 0.2)
            else:
                param.normal_(0.0, 0.15)
    return model


def gisp_config_from_hf(hf_config, **overrides) -> GispConfig:
    """The GispConfig of an unpruned model: uniform per-layer lists, kv_head_of_query[i] = i // group."""
    family = hf_config.model_type
    layers = hf_config.num_hidden_layers
    attention_bias = family == "qwen2" or getattr(hf_config, "attention_bias", False)
    kwargs = dict(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        num_hidden_layers=layers,
        head_dim=hf_config.head_dim,
        num_attention_heads=[hf_config.num_attention_heads] * layers,
        num_key_value_heads=[hf_config.num_key_value_heads] * layers,
        intermediate_size=[hf_config.intermediate_size] * layers,
        hidden_act=hf_config.hidden_act,
        rms_norm_eps=hf_config.rms_norm_eps,
        max_position_embeddings=hf_config.max_position_embeddings,
        rope_parameters=dict(hf_config.rope_parameters),
        attention_bias=attention_bias,
        # Llama and Qwen3 put the attention bias on o_proj too, Qwen2 only on q/k/v; Llama's mlp_bias covers down.
        o_proj_bias=attention_bias and family in ("llama", "qwen3"),
        mlp_bias=getattr(hf_config, "mlp_bias", False),
        down_proj_bias=getattr(hf_config, "mlp_bias", False),
        qk_norm=family == "qwen3",
        tie_word_embeddings=hf_config.tie_word_embeddings,
        bos_token_id=hf_config.bos_token_id,
        eos_token_id=hf_config.eos_token_id,
        pad_token_id=hf_config.pad_token_id,
        source_model_type=family,
    )
    kwargs.update(overrides)
    return GispConfig(**kwargs)


def gisp_from_hf(hf_model) -> GispForCausalLM:
    model = GispForCausalLM(gisp_config_from_hf(hf_model.config)).eval()
    model.load_state_dict(hf_model.state_dict(), strict=True)
    return model


def prune_hf(hf_model, keep_heads: dict[int, list[int]], keep_channels: dict[int, list[int]]):
    """Slices an HF model into a GispForCausalLM, and masks a copy of the HF model the same way.

    Returns `(gisp_model, masked_hf_model)`. A layer absent from a dict keeps everything.
    """
    cfg = hf_model.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    state = {k: v.clone() for k, v in hf_model.state_dict().items()}
    masked = copy.deepcopy(hf_model)
    heads, kv_heads, kv_of_query, widths = [], [], [], []
    for layer in range(cfg.num_hidden_layers):
        attn, mlp = f"model.layers.{layer}.self_attn", f"model.layers.{layer}.mlp"
        kept = sorted(keep_heads.get(layer, range(cfg.num_attention_heads)))
        kept_kv = sorted({h // group for h in kept})
        heads.append(len(kept))
        kv_heads.append(len(kept_kv))
        kv_of_query.append([kept_kv.index(h // group) for h in kept])
        q_rows = _head_rows(kept)
        kv_rows = _head_rows(kept_kv)
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            for suffix in ("weight", "bias"):
                key = f"{attn}.{name}.{suffix}"
                if key in state:
                    state[key] = state[key][rows]
        state[f"{attn}.o_proj.weight"] = state[f"{attn}.o_proj.weight"][:, q_rows]

        channels = sorted(keep_channels.get(layer, range(cfg.intermediate_size)))
        widths.append(len(channels))
        for name in ("gate_proj", "up_proj"):
            for suffix in ("weight", "bias"):
                key = f"{mlp}.{name}.{suffix}"
                if key in state:
                    state[key] = state[key][channels]
        state[f"{mlp}.down_proj.weight"] = state[f"{mlp}.down_proj.weight"][:, channels]

        with torch.no_grad():
            dropped_heads = [h for h in range(cfg.num_attention_heads) if h not in kept]
            masked.model.layers[layer].self_attn.o_proj.weight[:, _head_rows(dropped_heads)] = 0.0
            dropped_channels = [c for c in range(cfg.intermediate_size) if c not in channels]
            masked.model.layers[layer].mlp.down_proj.weight[:, dropped_channels] = 0.0

    config = gisp_config_from_hf(
        cfg,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        kv_head_of_query=kv_of_query,
        intermediate_size=widths,
    )
    model = GispForCausalLM(config).eval()
    model.load_state_dict(state, strict=True)
    return model, masked


def _head_rows(heads) -> list[int]:
    return [h * HEAD_DIM + d for h in heads for d in range(HEAD_DIM)]


def prompts(seed: int = 1):
    """A left-padded batch: row 0 has 9 real tokens, row 1 has 5 after 4 pads."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (2, 9), generator=g)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, :4] = PAD
    attention_mask[1, :4] = 0
    return input_ids, attention_mask


def assert_same_logits(model, reference, input_ids, attention_mask=None):
    with torch.no_grad():
        ours = model(input_ids, attention_mask=attention_mask).logits
        theirs = reference(input_ids, attention_mask=attention_mask).logits
    assert ours.abs().max() > 0.1, "logits too small for the comparison to mean anything"
    assert torch.isfinite(ours).all()
    # Padding positions included: a query that sees no key gets a zero attention output in both.
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def greedy(model, input_ids, attention_mask=None, **kwargs):
    out = model.generate(
        input_ids,
        attention_mask=attention_mask,
        max_new_tokens=6,
        do_sample=False,
        pad_token_id=PAD,
        **kwargs,
    )
    return out[:, input_ids.shape[1] :]


@pytest.mark.parametrize(
    ("family", "heads", "kv_heads", "overrides"),
    [
        ("llama", 4, 4, {}),
        ("llama", 4, 2, {"rope_parameters": LLAMA3_ROPE}),
        ("llama", 4, 2, {"attention_bias": True, "mlp_bias": True}),
        ("mistral", 4, 2, {}),
        ("qwen2", 4, 2, {"rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}),
        ("qwen3", 4, 2, {"tie_word_embeddings": True}),
    ],
    ids=[
        "llama-mha",
        "llama-gqa-llama3rope",
        "llama-biases",
        "mistral",
        "qwen2-qkv-bias",
        "qwen3-qknorm-tied",
    ],
)
def test_unpruned_model_matches_transformers(family, heads, kv_heads, overrides):
    hf = tiny_hf_model(family, heads=heads, kv_heads=kv_heads, layers=3, **overrides)
    model = gisp_from_hf(hf)
    input_ids, attention_mask = prompts()

    assert_same_logits(model, hf, input_ids)
    assert_same_logits(model, hf, input_ids, attention_mask)

    with torch.no_grad():
        ours = model(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
        theirs = hf(input_ids, attention_mask=attention_mask, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 4
    for mine, reference in zip(ours, theirs):
        torch.testing.assert_close(mine, reference, atol=ATOL, rtol=0)

    labels = input_ids.masked_fill(attention_mask == 0, -100)
    with torch.no_grad():
        ours = model(input_ids, attention_mask=attention_mask, labels=labels).loss
        theirs = hf(input_ids, attention_mask=attention_mask, labels=labels).loss
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)

    assert torch.equal(greedy(model, input_ids, attention_mask), greedy(hf, input_ids, attention_mask))
    if hf.config.tie_word_embeddings:
        assert model.lm_head.weight is model.model.embed_tokens.weight


def non_uniform_llama():
    """Layer 0 keeps query heads {0, 1, 3} (kv head 0 serves two, kv head 1 one); layer 1 keeps query head 2 only."""
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=3)
    g = torch.Generator().manual_seed(3)
    keep_channels = {
        0: torch.randperm(INTERMEDIATE, generator=g)[:50].tolist(),
        2: list(range(0, INTERMEDIATE, 7)),
    }
    model, masked = prune_hf(hf, keep_heads={0: [0, 1, 3], 1: [2]}, keep_channels=keep_channels)
    return model, masked


def test_non_uniform_groups_match_masked_model():
    model, masked = non_uniform_llama()
    assert model.config.kv_head_of_query[:2] == [[0, 0, 1], [0]]
    attn0, attn1 = model.model.layers[0].self_attn, model.model.layers[1].self_attn
    assert (attn0.num_heads, attn0.num_key_value_heads) == (3, 2)
    assert (attn1.num_heads, attn1.num_key_value_heads) == (1, 1)
    assert attn0.kv_index.tolist() == [0, 0, 1]
    assert model.model.layers[0].mlp.down_proj.in_features == 50

    input_ids, attention_mask = prompts()
    assert_same_logits(model, masked, input_ids)
    assert_same_logits(model, masked, input_ids, attention_mask)
    assert torch.equal(greedy(model, input_ids, attention_mask), greedy(masked, input_ids, attention_mask))


def test_key_value_heads_are_read_without_copies_where_the_groups_allow(monkeypatch):
    """MHA and equal GQA groups skip the per-call gather of the cache; only uneven groups pay for it."""
    mha, gqa = gisp_from_hf(tiny_hf_model("llama", 4, 4)), gisp_from_hf(tiny_hf_model("llama", 4, 2))
    uneven, _ = non_uniform_llama()
    assert [layer.self_attn.kv_layout() for layer in mha.model.layers] == ["own", "own"]
    assert [layer.self_attn.kv_layout() for layer in gqa.model.layers] == ["groups", "groups"]
    assert [layer.self_attn.kv_layout() for layer in uneven.model.layers] == ["gather", "own", "groups"]

    input_ids, attention_mask = prompts()
    with torch.no_grad():
        fast = [m(input_ids, attention_mask=attention_mask).logits for m in (mha, gqa)]
        fast_greedy = [greedy(m, input_ids, attention_mask) for m in (mha, gqa)]
    monkeypatch.setattr(type(mha.model.layers[0].self_attn), "kv_layout", lambda self: "gather")
    with torch.no_grad():
        for model, logits, tokens in zip((mha, gqa), fast, fast_greedy):
            torch.testing.assert_close(
                model(input_ids, attention_mask=attention_mask).logits, logits, atol=ATOL, rtol=0
            )
            assert torch.equal(greedy(model, input_ids, attention_mask), tokens)


def test_no_mask_where_sdpa_needs_none_so_it_can_use_fused_kernels():
    ones, padded = torch.ones(2, 6, dtype=torch.long), torch.tensor([[0, 1, 1, 1, 1, 1], [1] * 6])
    assert build_attention_mask(None, torch.arange(6), 6) is None  # prompt: the causal flag does it
    assert build_attention_mask(ones, torch.arange(6), 6) is None
    assert build_attention_mask(ones, torch.tensor([5]), 6) is None  # one new token sees every key
    decode = build_attention_mask(padded, torch.tensor([5]), 6)
    assert decode.shape == (2, 1, 1, 6) and decode[0, 0, 0].tolist() == [False] + [True] * 5
    chunk = build_attention_mask(None, torch.tensor([4, 5]), 6)  # two new tokens after a cache
    assert chunk[0, 0].tolist() == [[True] * 5 + [False], [True] * 6]
    with pytest.raises(ValueError, match="covers 5 tokens"):
        build_attention_mask(torch.ones(1, 5), torch.tensor([5]), 6)


def test_kv_layout_follows_a_replaced_index():
    model = gisp_from_hf(tiny_hf_model("llama", 4, 2))
    attention = model.model.layers[0].self_attn
    assert attention.kv_layout() == "groups"
    attention.kv_index = torch.tensor([0, 1, 0, 1])  # what slicing or loading would put there
    assert attention.kv_layout() == "gather"


def test_sizes_follow_modules_sliced_in_place():
    """The engine slices a live model without touching its config; the forward must follow the modules."""
    expected, _ = non_uniform_llama()
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=3)
    model = gisp_from_hf(hf)
    with torch.no_grad():
        for layer, source in zip(model.model.layers, expected.model.layers):
            for block_name in ("self_attn", "mlp"):
                target_block, source_block = getattr(layer, block_name), getattr(source, block_name)
                for name, child in source_block.named_children():
                    if isinstance(child, torch.nn.Linear):
                        setattr(target_block, name, copy.deepcopy(child))
            layer.self_attn.kv_index = source.self_attn.kv_index.clone()
    assert model.config.num_attention_heads == [4, 4, 4]  # untouched
    input_ids, attention_mask = prompts()
    assert_same_logits(model, expected, input_ids, attention_mask)


def test_zero_heads_and_zero_channels():
    """Layer 0 loses every head (the cache length is read from layer 0), layer 1 every MLP channel; with biases."""
    hf = tiny_hf_model("llama", heads=4, kv_heads=2, layers=3, attention_bias=True, mlp_bias=True)
    model, masked = prune_hf(hf, keep_heads={0: [], 2: [1, 2]}, keep_channels={1: []})
    assert model.config.num_attention_heads == [0, 4, 2]
    assert model.config.intermediate_size == [INTERMEDIATE, 0, INTERMEDIATE]
    assert model.model.layers[0].self_attn.num_heads == 0
    assert model.model.layers[1].mlp.down_proj.in_features == 0

    input_ids, attention_mask = prompts()
    assert_same_logits(model, masked, input_ids)
    assert_same_logits(model, masked, input_ids, attention_mask)

    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids, attention_mask=attention_mask, past_key_values=cache, use_cache=True)
    assert cache.get_seq_length() == input_ids.shape[1]

    with_cache = greedy(model, input_ids, attention_mask)
    assert torch.equal(with_cache, greedy(model, input_ids, attention_mask, use_cache=False))
    assert torch.equal(with_cache, greedy(masked, input_ids, attention_mask))


def shipped_imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add("." * node.level + (node.module or "").split(".")[0])
    return modules


def test_save_pretrained_and_load_as_remote_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # The engine registers its in-repo classes for model_type "gisp", and transformers prefers those to the
    # files shipped in the folder. A user's transformers only has the folder: hide the local registration.
    monkeypatch.setattr(
        CONFIG_MAPPING,
        "_extra_content",
        {k: v for k, v in CONFIG_MAPPING._extra_content.items() if k != "gisp"},
    )
    monkeypatch.setattr(
        MODEL_FOR_CAUSAL_LM_MAPPING,
        "_extra_content",
        {k: v for k, v in MODEL_FOR_CAUSAL_LM_MAPPING._extra_content.items() if k.model_type != "gisp"},
    )
    # Registration sets class attributes; monkeypatch puts them back for the other tests.
    monkeypatch.setattr(GispConfig, "_auto_class", None)
    monkeypatch.setattr(GispForCausalLM, "_auto_class", None)
    GispConfig.register_for_auto_class()
    GispForCausalLM.register_for_auto_class("AutoModelForCausalLM")

    hf = tiny_hf_model(
        "llama", heads=4, kv_heads=2, layers=3, rope_parameters=LLAMA3_ROPE, tie_word_embeddings=True
    )
    model, _ = prune_hf(hf, keep_heads={0: [0, 1, 3], 1: [], 2: [2]}, keep_channels={2: list(range(40))})
    model.save_pretrained(tmp_path)

    files = set(os.listdir(tmp_path))
    assert {"config.json", "configuration_gisp.py", "modeling_gisp.py", "model.safetensors"} <= files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_gisp.GispConfig",
        "AutoModelForCausalLM": "modeling_gisp.GispForCausalLM",
    }
    assert config["model_type"] == "llama"  # the pruned family: its tokenizer loads without a question
    assert config["gisp_layers"]["num_attention_heads"] == [3, 0, 1]
    assert config["intermediate_size"] > max(config["gisp_layers"]["intermediate_size"])  # stock never fits
    stock = AutoConfig.from_pretrained(tmp_path)  # the family's own strict config accepts the file
    assert type(stock) is LlamaConfig
    assert shipped_imports(tmp_path / "modeling_gisp.py") == {"torch", "transformers", ".configuration_gisp"}
    assert shipped_imports(tmp_path / "configuration_gisp.py") == {
        "json",
        "transformers",
    }  # stdlib + transformers

    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert type(loaded).__name__ == "GispForCausalLM"
    assert type(loaded).__module__.startswith("transformers_modules.")  # the copy shipped in the folder
    assert loaded.model.layers[0].self_attn.kv_index.tolist() == [0, 0, 1]
    assert loaded.model.layers[1].self_attn.num_heads == 0
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    torch.testing.assert_close(
        loaded.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq, atol=0, rtol=0
    )

    input_ids, attention_mask = prompts()
    assert_same_logits(loaded, model, input_ids, attention_mask)
    single = input_ids[:1]
    expected = greedy(model, single)
    assert torch.equal(greedy(loaded, single), expected)
    assert torch.equal(greedy(loaded, single, use_cache=False), expected)


def test_left_padded_batch_generates_like_single_prompts():
    model, _ = non_uniform_llama()
    input_ids, attention_mask = prompts()
    batch = greedy(model, input_ids, attention_mask)
    first = greedy(model, input_ids[:1])
    second = greedy(model, input_ids[1:, 4:])
    assert torch.equal(batch, torch.cat([first, second]))


def test_config_rejects_inconsistent_layers():
    with pytest.raises(ValueError, match="num_attention_heads"):
        GispConfig(num_hidden_layers=2, num_attention_heads=[4, 4, 4])
    with pytest.raises(ValueError, match=r"kv_head_of_query\[1\]"):
        GispConfig(num_attention_heads=[2, 2], num_key_value_heads=[1, 1], kv_head_of_query=[[0, 0], [0]])
    with pytest.raises(ValueError, match=r"kv_head_of_query\[0\]"):
        GispConfig(num_attention_heads=[2, 2], num_key_value_heads=[1, 1], kv_head_of_query=[[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="split evenly"):
        GispConfig(num_attention_heads=[3, 4], num_key_value_heads=[2, 2])
