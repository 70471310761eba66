"""Each decoder layer of a checkpoint as the tensors and sizes llama.cpp reads, computing the same function.

Exact rewrites only (each explained where it happens): uneven key/value groups become even (``regroup``); the
rotary halves of query/key rows are interleaved for llama.cpp's "normal" RoPE; and two cases llama.cpp's DeciLM
graph does not compute as a pruned layer does get a structure whose contribution is exactly zero apart from its bias:

* a layer whose MLP lost every channel: the DeciLM graph skips a layer with ``n_ff = 0`` entirely, dropping its
  attention output too, so such a layer is written with one channel whose down-projection column is zero (the
  channel outputs ``down_bias`` exactly, or zero);
* a layer whose attention lost every head but keeps an output bias (compensation), or is layer 0 (llama.cpp reads
  the head size from layer 0's head count): written with one head whose output-projection columns are zero.
  Other head-less layers use the DeciLM graph's own attention-free path (``n_head = 0``): nothing is computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from gguf import MODEL_TENSOR, TENSOR_NAMES

from core.engine.export.checkpoint import Checkpoint
from core.engine.export.regroup import regroup
from core.errors import UserInputError


@dataclass
class GgufLayer:
    """Sizes llama.cpp reads for one layer, and its tensors by GGUF name."""

    heads: int
    kv_heads: int
    channels: int
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


def tensor_name(kind: MODEL_TENSOR, layer: int | None = None, suffix: str = "weight") -> str:
    base = TENSOR_NAMES[kind]
    return f"{base.format(bid=layer) if layer is not None else base}.{suffix}"


def interleave_rotary_halves(rows: np.ndarray, heads: int) -> np.ndarray:
    """Transformers rotates dimension ``i`` with ``i + d/2``; llama.cpp's normal RoPE rotates ``2i`` with
    ``2i + 1``. Reordering each head's rows (and bias entries) so ``i -> 2i`` and ``i + d/2 -> 2i + 1`` makes the
    two compute the same scores (the dot product of query and key is unchanged by a shared permutation)."""
    if heads == 0:
        return rows
    shape = rows.shape
    per_head = shape[0] // heads
    return rows.reshape(heads, 2, per_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def gguf_layers(
    checkpoint: Checkpoint, *, interleave_rope: bool, padded_structures: bool, channel_multiple: int = 1
) -> list[GgufLayer]:
    """All layers; ``padded_structures`` allows the zero-contribution head/channel described above (DeciLM).

    ``channel_multiple``: MLP widths are padded up to a multiple of it with zero channels (zero gate/up rows, zero
    down-projection columns: exactly nothing added). q8_0 quantises rows in blocks of 32 values, and the
    down-projection's rows are as long as the pruned width, so padding lets it be quantised too.
    """
    return [
        _layer(checkpoint, index, interleave_rope, padded_structures, channel_multiple)
        for index in range(len(checkpoint.layers))
    ]


def _layer(
    checkpoint: Checkpoint, index: int, interleave_rope: bool, padded: bool, channel_multiple: int
) -> GgufLayer:
    prefix = f"model.layers.{index}."
    out = GgufLayer(heads=0, kv_heads=0, channels=0)
    _attention(checkpoint, index, prefix, out, interleave_rope=interleave_rope, padded=padded)
    _mlp(checkpoint, index, prefix, out, padded=padded, multiple=channel_multiple)
    return out


def _attention(
    checkpoint: Checkpoint, index: int, prefix: str, out: GgufLayer, *, interleave_rope: bool, padded: bool
) -> None:
    shape = checkpoint.layers[index]
    attn = prefix + "self_attn."
    o_bias = checkpoint.optional(attn + "o_proj.bias")
    d, hidden = checkpoint.head_dim, checkpoint.hidden_size
    if shape.heads == 0:
        needs_head = index == 0 or (o_bias is not None and np.any(o_bias))
        if not needs_head:
            return  # the DeciLM graph's attention-free layer: the residual stream passes unchanged
        if not padded:
            raise UserInputError(
                f"layer {index} has no attention heads, which this llama.cpp architecture cannot express",
                field="checkpoint",
            )
        q = np.zeros((d, hidden), np.float32)
        k, v, o = q.copy(), q.copy(), np.zeros((hidden, d), np.float32)
        biases: dict[str, np.ndarray | None] = {"q": None, "k": None, "v": None}
        _put_attention(checkpoint, index, prefix, out, q, k, v, o, biases, o_bias, 1, 1, interleave_rope)
        return
    plan = regroup(shape.kv_of_query)
    query_source, kv_source = plan.query_source, plan.kv_source
    q_w = checkpoint.tensor(attn + "q_proj.weight").reshape(shape.heads, d, hidden)
    k_w = checkpoint.tensor(attn + "k_proj.weight").reshape(shape.kv_heads, d, hidden)
    v_w = checkpoint.tensor(attn + "v_proj.weight").reshape(shape.kv_heads, d, hidden)
    o_w = checkpoint.tensor(attn + "o_proj.weight").reshape(hidden, shape.heads, d)
    zero_rows = np.zeros((d, hidden), np.float32)
    q = np.concatenate([q_w[s] if s is not None else zero_rows for s in query_source])
    k = np.concatenate([k_w[s] for s in kv_source])
    v = np.concatenate([v_w[s] for s in kv_source])
    zero_cols = np.zeros((hidden, d), np.float32)
    o = np.concatenate([o_w[:, s] if s is not None else zero_cols for s in query_source], axis=1)
    biases = {}
    for name, source, count in (("q", query_source, shape.heads), ("k", kv_source, shape.kv_heads)):
        bias = checkpoint.optional(attn + f"{name}_proj.bias")
        biases[name] = None if bias is None else _pick(bias.reshape(count, d), source, d)
    v_bias = checkpoint.optional(attn + "v_proj.bias")
    biases["v"] = None if v_bias is None else _pick(v_bias.reshape(shape.kv_heads, d), kv_source, d)
    _put_attention(
        checkpoint,
        index,
        prefix,
        out,
        q,
        k,
        v,
        o,
        biases,
        o_bias,
        len(query_source),
        len(kv_source),
        interleave_rope,
    )


def _pick(per_head: np.ndarray, source: list[int | None] | list[int], d: int) -> np.ndarray:
    zero = np.zeros(d, np.float32)
    return np.concatenate([per_head[s] if s is not None else zero for s in source])


def _put_attention(
    checkpoint: Checkpoint,
    index: int,
    prefix: str,
    out: GgufLayer,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    o: np.ndarray,
    biases: dict[str, np.ndarray | None],
    o_bias: np.ndarray | None,
    heads: int,
    kv_heads: int,
    interleave_rope: bool,
) -> None:
    if interleave_rope:
        q = interleave_rotary_halves(q, heads)
        k = interleave_rotary_halves(k, kv_heads)
        for name, count in (("q", heads), ("k", kv_heads)):
            bias = biases[name]
            if bias is not None:
                biases[name] = interleave_rotary_halves(bias, count)
    t = out.tensors
    t[tensor_name(MODEL_TENSOR.ATTN_NORM, index)] = checkpoint.tensor(prefix + "input_layernorm.weight")
    t[tensor_name(MODEL_TENSOR.ATTN_Q, index)] = q
    t[tensor_name(MODEL_TENSOR.ATTN_K, index)] = k
    t[tensor_name(MODEL_TENSOR.ATTN_V, index)] = v
    t[tensor_name(MODEL_TENSOR.ATTN_OUT, index)] = o
    for name, kind in (("q", MODEL_TENSOR.ATTN_Q), ("k", MODEL_TENSOR.ATTN_K), ("v", MODEL_TENSOR.ATTN_V)):
        bias = biases[name]
        if bias is not None:
            t[tensor_name(kind, index, "bias")] = bias
    if o_bias is not None:
        t[tensor_name(MODEL_TENSOR.ATTN_OUT, index, "bias")] = o_bias
    if checkpoint.qk_norm:
        attn = prefix + "self_attn."
        t[tensor_name(MODEL_TENSOR.ATTN_Q_NORM, index)] = checkpoint.tensor(attn + "q_norm.weight")
        t[tensor_name(MODEL_TENSOR.ATTN_K_NORM, index)] = checkpoint.tensor(attn + "k_norm.weight")
    out.heads, out.kv_heads = heads, kv_heads


def _mlp(
    checkpoint: Checkpoint, index: int, prefix: str, out: GgufLayer, *, padded: bool, multiple: int
) -> None:
    channels = checkpoint.layers[index].channels
    mlp = prefix + "mlp."
    hidden = checkpoint.hidden_size
    gate = checkpoint.tensor(mlp + "gate_proj.weight")
    up = checkpoint.tensor(mlp + "up_proj.weight")
    down = checkpoint.tensor(mlp + "down_proj.weight")
    gate_bias, up_bias = (
        checkpoint.optional(mlp + "gate_proj.bias"),
        checkpoint.optional(mlp + "up_proj.bias"),
    )
    if channels == 0:
        if not padded:
            raise UserInputError(
                f"layer {index} has no MLP channels, which this llama.cpp architecture cannot express",
                field="checkpoint",
            )
        # one channel whose down-projection column is zero: silu(0) * 0 * 0 adds exactly nothing
        gate, up, down = (
            np.zeros((1, hidden), np.float32),
            np.zeros((1, hidden), np.float32),
            np.zeros((hidden, 1), np.float32),
        )
        gate_bias = None if gate_bias is None else np.zeros(1, np.float32)
        up_bias = None if up_bias is None else np.zeros(1, np.float32)
    extra = -gate.shape[0] % multiple
    if extra:
        gate, up = np.pad(gate, ((0, extra), (0, 0))), np.pad(up, ((0, extra), (0, 0)))
        down = np.pad(down, ((0, 0), (0, extra)))
        gate_bias = None if gate_bias is None else np.pad(gate_bias, (0, extra))
        up_bias = None if up_bias is None else np.pad(up_bias, (0, extra))
    t = out.tensors
    t[tensor_name(MODEL_TENSOR.FFN_NORM, index)] = checkpoint.tensor(
        prefix + "post_attention_layernorm.weight"
    )
    t[tensor_name(MODEL_TENSOR.FFN_GATE, index)] = gate
    t[tensor_name(MODEL_TENSOR.FFN_UP, index)] = up
    t[tensor_name(MODEL_TENSOR.FFN_DOWN, index)] = down
    for kind, bias in (
        (MODEL_TENSOR.FFN_GATE, gate_bias),
        (MODEL_TENSOR.FFN_UP, up_bias),
        (MODEL_TENSOR.FFN_DOWN, checkpoint.optional(mlp + "down_proj.bias")),
    ):
        if bias is not None:
            t[tensor_name(kind, index, "bias")] = bias
    out.channels = gate.shape[0]
