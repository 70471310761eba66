"""A checkpoint folder written as one GGUF file that llama.cpp (and Ollama, LM Studio, llama-cpp-python) runs.

Which llama.cpp architecture, and why:

* **non-uniform** checkpoints (per-layer sizes under ``gisp_layers``) are written as ``deci``, llama.cpp's DeciLM / Nemotron-NAS
  architecture. It is the only Llama-shaped one whose loader and graph read the query-head count, key/value-head
  count and feed-forward width **per layer** (arrays under ``deci.attention.head_count``,
  ``deci.attention.head_count_kv``, ``deci.feed_forward_length``) and that has attention-free layers
  (``n_head = 0``); it loads the optional q/k/v, output and MLP biases (``attn_*.bias``, ``attn_output.bias``,
  ``ffn_*.bias``) that Qwen2 and bias compensation or the refit need. Two of its corners need an exact rewrite
  (``layers``): it skips a layer with ``n_ff = 0`` altogether, and it reads the head size from layer 0.
  Per-head q/k norms (Qwen3) are not in its graph, so a non-uniform Qwen3 checkpoint is refused.
* **uniform** checkpoints (the family's stock config) are written as stock ``llama`` (Llama, Mistral, and Qwen2,
  whose q/k/v biases ``llama`` loads), or ``qwen3`` where per-head q/k norms are needed.

Both ``deci`` and ``llama`` use llama.cpp's "normal" RoPE, so the query/key rows are interleaved
(``layers.interleave_rotary_halves``); ``qwen3`` uses the same rotate-half RoPE as transformers and takes them as
they are. Weights are written by the ``gguf`` package; quantisation is its ``quants.quantize``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gguf import MODEL_TENSOR, GGMLQuantizationType, GGUFWriter, LlamaFileType, RopeScalingType, quants

from core.engine.export.checkpoint import Checkpoint, read_checkpoint
from core.engine.export.layers import GgufLayer, gguf_layers, tensor_name
from core.engine.export.vocab import add_vocab
from core.errors import UserInputError

GGUF_TYPES: dict[str, tuple[GGMLQuantizationType, LlamaFileType]] = {
    "f32": (GGMLQuantizationType.F32, LlamaFileType.ALL_F32),
    "f16": (GGMLQuantizationType.F16, LlamaFileType.MOSTLY_F16),
    "q8_0": (GGMLQuantizationType.Q8_0, LlamaFileType.MOSTLY_Q8_0),
}


Q8_BLOCK = 32  # values per q8_0 block: a quantised row's length must be a multiple of it


@dataclass(frozen=True)
class Architecture:
    name: str
    interleave_rope: bool  # llama.cpp's "normal" RoPE pairs neighbouring dimensions
    padded_structures: bool  # zero-contribution head / channel allowed (see ``layers``)
    per_layer_sizes: bool


DECI = Architecture("deci", interleave_rope=True, padded_structures=True, per_layer_sizes=True)
LLAMA = Architecture("llama", interleave_rope=True, padded_structures=False, per_layer_sizes=False)
QWEN3 = Architecture("qwen3", interleave_rope=False, padded_structures=False, per_layer_sizes=False)


def choose_architecture(checkpoint: Checkpoint) -> Architecture:
    """The llama.cpp architecture that computes exactly what the checkpoint computes (see the module text)."""
    if not checkpoint.uniform:
        if checkpoint.qk_norm:
            raise UserInputError(
                "non-uniform Qwen3 checkpoints (per-head q/k norms, sizes per layer) have no llama.cpp "
                "architecture; export the uniform layout of the job instead",
                field="checkpoint",
            )
        return DECI
    if checkpoint.qk_norm:
        for index in range(len(checkpoint.layers)):
            for name in ("self_attn.o_proj.bias", "mlp.down_proj.bias", "self_attn.q_proj.bias"):
                if checkpoint.optional(f"model.layers.{index}.{name}") is not None:
                    raise UserInputError(
                        f"layer {index}: llama.cpp's qwen3 architecture has no {name}; prune with "
                        "bias_compensation=false or export the non-uniform layout",
                        field="checkpoint",
                    )
        return QWEN3
    return LLAMA


def export_gguf(checkpoint_dir: str | Path, out: str | Path, *, gguf_type: str = "f16") -> Path:
    """Writes ``checkpoint_dir`` as the GGUF file ``out`` (``gguf_type``: f32, f16 or q8_0); returns ``out``."""
    if gguf_type not in GGUF_TYPES:
        raise UserInputError(f"type must be one of {', '.join(GGUF_TYPES)}, got '{gguf_type}'", field="type")
    checkpoint = read_checkpoint(checkpoint_dir)
    arch = choose_architecture(checkpoint)
    layers = gguf_layers(
        checkpoint,
        interleave_rope=arch.interleave_rope,
        padded_structures=arch.padded_structures,
        # whole blocks for q8_0; and llama.cpp's fast CPU matrix kernels want inner sizes in multiples of 32 too
        channel_multiple=Q8_BLOCK if gguf_type != "f32" else 1,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    writer = GGUFWriter(partial, arch.name)
    try:
        _add_metadata(writer, checkpoint, arch, layers, gguf_type)
        add_vocab(writer, checkpoint.directory, checkpoint.vocab_size)
        for name, array in _all_tensors(checkpoint, arch, layers):
            _add_tensor(writer, name, array, gguf_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(partial, out)
    return out


def _add_metadata(
    writer: GGUFWriter, checkpoint: Checkpoint, arch: Architecture, layers: list[GgufLayer], gguf_type: str
) -> None:
    writer.add_name(checkpoint.directory.name)
    writer.add_context_length(checkpoint.context_length)
    writer.add_embedding_length(checkpoint.hidden_size)
    writer.add_block_count(len(layers))
    heads = [layer.heads for layer in layers]
    kv_heads = [layer.kv_heads for layer in layers]
    channels = [layer.channels for layer in layers]
    if arch.per_layer_sizes:
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_feed_forward_length(channels)
    else:
        writer.add_head_count(heads[0])
        writer.add_head_count_kv(kv_heads[0])
        writer.add_feed_forward_length(channels[0])
    writer.add_key_length(checkpoint.head_dim)
    writer.add_value_length(checkpoint.head_dim)
    writer.add_rope_dimension_count(checkpoint.head_dim)
    writer.add_rope_freq_base(float(checkpoint.rope["rope_theta"]))
    rope_type = checkpoint.rope.get("rope_type", "default")
    if rope_type == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(checkpoint.rope["factor"]))
    writer.add_layer_norm_rms_eps(checkpoint.rms_norm_eps)
    writer.add_vocab_size(checkpoint.vocab_size)
    writer.add_file_type(GGUF_TYPES[gguf_type][1])


def _all_tensors(checkpoint: Checkpoint, arch: Architecture, layers: list[GgufLayer]):
    yield tensor_name(MODEL_TENSOR.TOKEN_EMBD), checkpoint.tensor("model.embed_tokens.weight")
    rope_factors = _rope_factors(checkpoint, arch)
    if rope_factors is not None:
        yield tensor_name(MODEL_TENSOR.ROPE_FREQS), rope_factors
    for layer in layers:
        yield from layer.tensors.items()
    yield tensor_name(MODEL_TENSOR.OUTPUT_NORM), checkpoint.tensor("model.norm.weight")
    if not checkpoint.tied_embeddings:
        yield tensor_name(MODEL_TENSOR.OUTPUT), checkpoint.tensor("lm_head.weight")


def _rope_factors(checkpoint: Checkpoint, arch: Architecture) -> np.ndarray | None:
    """Llama 3's frequency-dependent RoPE scaling, as the per-frequency divisors llama.cpp applies
    (``rope_freqs``): the unscaled inverse frequencies over the scaled ones transformers computes."""
    rope_type = checkpoint.rope.get("rope_type", "default")
    if rope_type in ("default", "linear"):
        return None
    if rope_type != "llama3" or arch is QWEN3:
        raise UserInputError(
            f"RoPE scaling '{rope_type}' is not exported to GGUF (supported: default, linear, llama3)",
            field="checkpoint",
        )
    from core.engine.modeling.configuration_gisp import GispConfig
    from core.engine.modeling.modeling_gisp import GispRotaryEmbedding

    config = GispConfig(
        hidden_size=checkpoint.hidden_size,
        num_hidden_layers=1,
        head_dim=checkpoint.head_dim,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=checkpoint.context_length,
        rope_parameters=checkpoint.rope,
    )
    scaled = GispRotaryEmbedding(config)
    default, _ = GispRotaryEmbedding.compute_default_rope_parameters(config)
    if scaled.attention_scaling != 1.0:
        raise UserInputError("RoPE attention scaling is not exported to GGUF", field="checkpoint")
    scaled_inv_freq = torch.as_tensor(scaled.inv_freq, dtype=torch.float32)
    return (default / scaled_inv_freq).numpy().astype(np.float32)


def _add_tensor(writer: GGUFWriter, name: str, array: np.ndarray, gguf_type: str) -> None:
    """Vectors (norms, biases, RoPE factors) stay float32, as llama.cpp's own converter writes them; q8_0 needs
    rows that are whole 32-value blocks (MLP widths are padded to them, ``layers.gguf_layers``); any other matrix
    whose rows are not (a head count times a head size that is not) falls back to f16."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    qtype = GGUF_TYPES[gguf_type][0]
    if array.ndim < 2 or qtype is GGMLQuantizationType.F32:
        writer.add_tensor(name, array)
    elif qtype is GGMLQuantizationType.F16 or array.shape[-1] % Q8_BLOCK:
        writer.add_tensor(name, array.astype(np.float16))
    else:
        writer.add_tensor(name, quants.quantize(array, qtype), raw_dtype=qtype)
