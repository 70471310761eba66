"""Parameter and FLOP counts by hand on the tiny Llama; the speed and memory probes on CPU."""

from __future__ import annotations

import json

import torch

from core.eval import build_report, evaluate_model
from core.eval.efficiency import EfficiencySettings, measure_speed, model_size
from tests.eval.conftest import build_model

# hidden 64, intermediate 128, 4 heads of 16, 2 KV heads, 2 layers
PER_LAYER_MATMUL = 64 * 64 + 2 * (64 * 32) + 64 * 64 + 3 * (64 * 128)


def test_counts_match_hand_computation(tokenizer) -> None:
    vocab = len(tokenizer)
    model = build_model(vocab)
    size = model_size(model, seq_len=128)
    assert size.matmul_parameters == 2 * PER_LAYER_MATMUL + 64 * vocab
    assert size.parameters == sum(p.numel() for p in model.parameters())
    assert size.parameters_without_embeddings == size.parameters - 64 * vocab
    assert size.attention_dim_total == 2 * 64
    assert size.flops_per_token == 2 * size.matmul_parameters + 2 * 129 * 128


def test_pruned_heads_and_tied_embeddings(tokenizer) -> None:
    model = build_model(len(tokenizer))
    dense = model_size(model, seq_len=32)
    attention = model.model.layers[0].self_attn
    attention.q_proj = torch.nn.Linear(64, 16, bias=False)  # one query head left in layer 0
    attention.o_proj = torch.nn.Linear(16, 64, bias=False)
    pruned = model_size(model, seq_len=32)
    assert pruned.attention_dim_total == 64 + 16
    assert dense.matmul_parameters - pruned.matmul_parameters == 2 * (64 * 64 - 64 * 16)
    assert pruned.flops_per_token < dense.flops_per_token

    tied = build_model(len(tokenizer))
    tied.config.tie_word_embeddings = True
    tied.tie_weights()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    size = model_size(tied)
    assert size.parameters == sum(p.numel() for p in tied.parameters())  # shared table counted once
    assert size.matmul_parameters == 2 * PER_LAYER_MATMUL + 64 * len(tokenizer)  # its product still costs


def test_speed_probe_reports_each_batch_size(model) -> None:
    result = measure_speed(model, seq_len=8, batch_sizes=(1, 2), repeats=1, decode_steps=2)
    assert set(result.prefill_latency_ms) == {"batch_1", "batch_2"}
    assert set(result.decode_tokens_per_s) == {"batch_1", "batch_2"}
    assert all(value > 0 for value in result.prefill_latency_ms.values())
    assert all(value > 0 for value in result.decode_tokens_per_s.values())
    assert result.device == "cpu"
    assert "psutil" in result.memory_method


PEAK_PROBE = """
import torch
from core.eval.efficiency import peak_memory
with peak_memory(torch.device("cpu")) as memory:
    block = torch.ones(40_000_000, dtype=torch.float32)  # 160 MB, kept alive past the block
    block.add_(1)
assert float(block[0]) == 2.0
print(memory["peak_memory_mb"])
"""


def test_cpu_peak_memory_sees_a_large_tensor() -> None:
    """In a fresh process: a long test session's allocator may reuse freed pages that RSS already counts."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", PEAK_PROBE], capture_output=True, text=True, check=True)
    assert float(result.stdout.strip().splitlines()[-1]) > 100


def test_efficiency_lands_in_metrics_and_timing(model, tokenizer) -> None:
    settings = EfficiencySettings(seq_len=8, batch_sizes=(1,), repeats=1, decode_steps=1)
    evaluation = evaluate_model(model, tokenizer, tasks=None, perplexity=False, efficiency=settings)
    assert evaluation == json.loads(json.dumps(evaluation))  # mergeable with a report read from disk
    assert evaluation["settings"]["efficiency"]["batch_sizes"] == [1]
    assert evaluation["metrics"]["efficiency"]["flops_seq_len"] == 8
    assert "prefill_latency_ms" in evaluation["timing"]["efficiency"]
    assert "prefill_latency_ms" not in evaluation["metrics"]["efficiency"]
    report = build_report({0.0: evaluation, 0.5: evaluation})
    assert report["results"][1]["vs_dense"]["parameters_ratio"] == 1.0
