"""Size and speed of a model on a given device: what structured pruning is supposed to buy.

Counted (deterministic, goes into ``metrics``):

* ``parameters``: distinct parameter tensors' elements (tied embeddings counted once), and the
  same without the input embedding table;
* ``flops_per_token`` for a forward pass at context ``seq_len``::

      2 * matmul_params + 2 * (seq_len + 1) * sum_over_layers(q_proj.out_features)

  ``matmul_params`` are the weights of every ``nn.Linear`` (``lm_head`` included, even when tied,
  because the product is still computed; embedding look-ups are free). The attention term counts
  ``Q K^T`` and ``A V``: ``2 * d_attn`` FLOPs per attended position each, with causal masking
  averaging ``(seq_len + 1) / 2`` attended positions per token. ``d_attn = heads * head_dim`` is
  read per layer from ``q_proj`` so pruned models with different heads per layer are counted right.
  Norms, activations, softmax and rotary embeddings are ignored (well under 1%).

Measured (clock and memory, goes into ``timing``; never compared between runs):

* prefill latency: median of ``repeats`` forward passes over ``batch x seq_len`` random tokens,
  after one warm-up, at batch 1 and 8;
* decode throughput: ``decode_steps`` greedy steps with the KV cache after an untimed ``seq_len``
  prefill, ``batch * steps / median time``, at batch 1 and 8;
* peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (reset first); on CPU tracemalloc cannot
  see torch's allocator, so a thread samples the process RSS with psutil every few milliseconds and
  the peak minus the RSS before the measurement is reported (``resource`` ``ru_maxrss`` growth is
  the fallback when psutil is missing; it only moves when the process's lifetime peak does).
"""

from __future__ import annotations

import inspect
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from core.eval.runtime import eval_mode, resolve_device


@dataclass(frozen=True)
class EfficiencySettings:
    """What the speed measurement runs; ``seq_len`` is also the context of the FLOPs count."""

    seq_len: int = 128
    batch_sizes: tuple[int, ...] = (1, 8)
    repeats: int = 5
    decode_steps: int = 32


@dataclass(frozen=True)
class ModelSize:
    parameters: int
    parameters_without_embeddings: int
    matmul_parameters: int
    attention_dim_total: int  # sum over layers of heads * head_dim
    layers: int
    flops_per_token: int
    flops_seq_len: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SpeedResult:
    device: str
    seq_len: int
    repeats: int
    decode_steps: int
    prefill_latency_ms: dict[str, float] = field(default_factory=dict)
    decode_tokens_per_s: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    memory_method: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all distinct parameters, the same minus the input embedding table)."""
    total = sum(p.numel() for p in model.parameters())
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    embedding_params = embeddings.weight.numel() if embeddings is not None else 0
    return total, total - embedding_params


def _attention_dims(model: torch.nn.Module) -> list[int]:
    """``heads * head_dim`` per layer from each ``q_proj``; the config when there is none."""
    dims = [
        m.out_features
        for name, m in model.named_modules()
        if name.endswith("q_proj") and hasattr(m, "out_features")
    ]
    if dims:
        return dims
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return [config.num_attention_heads * head_dim] * config.num_hidden_layers


def model_size(model: torch.nn.Module, seq_len: int = 128) -> ModelSize:
    """Parameter counts and forward FLOPs per token at context ``seq_len`` (formula above)."""
    total, without_embeddings = count_parameters(model)
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    dims = _attention_dims(model)
    attention = 2 * (seq_len + 1) * sum(dims)
    return ModelSize(
        parameters=total,
        parameters_without_embeddings=without_embeddings,
        matmul_parameters=matmul,
        attention_dim_total=sum(dims),
        layers=len(dims),
        flops_per_token=2 * matmul + attention,
        flops_seq_len=seq_len,
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(run: Callable[[], None], repeats: int, device: torch.device) -> float:
    run()  # warm-up: kernels, allocator, caches
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        run()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _RssSampler:
    """Peak RSS of this process during a block, sampled from a background thread."""

    def __init__(self, interval_s: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self.baseline = self._process.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """Yield a dict filled on exit with ``peak_memory_mb`` and the method used (see module doc)."""
    out: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield out
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["peak_memory_above_weights_mb"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
        out["memory_method"] = "torch.cuda.max_memory_allocated"
        return
    try:
        sampler = _RssSampler()
    except ImportError:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        yield out
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out["peak_memory_mb"] = (after - before) / 1024  # ru_maxrss is KiB on Linux
        out["memory_method"] = "ru_maxrss growth (lifetime peak; 0 when below an earlier peak)"
        return
    with sampler:
        yield out
    out["peak_memory_mb"] = (sampler.peak - sampler.baseline) / 2**20
    out["memory_method"] = "psutil RSS sampled every 5 ms, peak minus RSS before"


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` during 5.x; use whichever forward takes."""
    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in names else "past_key_values"


def _cache_of(output: Any) -> Any:
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)


@torch.no_grad()
def _decode_seconds(
    model: torch.nn.Module, prompt: torch.Tensor, steps: int, repeats: int, device: torch.device
) -> float:
    """Median time of ``steps`` greedy KV-cache steps; the prefill before them is not timed."""
    kwarg = _cache_kwarg(model)
    times = []
    for repeat in range(repeats + 1):  # the first pass is a warm-up
        out = model(input_ids=prompt, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=token, use_cache=True, **{kwarg: _cache_of(out)})
            token = out.logits[:, -1:].argmax(-1)
        _sync(device)
        if repeat:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_speed(
    model: torch.nn.Module,
    *,
    device: str | torch.device | None = None,
    seq_len: int = 128,
    batch_sizes: Sequence[int] = (1, 8),
    repeats: int = 5,
    decode_steps: int = 32,
    vocab_size: int | None = None,
    seed: int = 0,
) -> SpeedResult:
    """Prefill latency and decode throughput per batch size, and peak memory over all of it."""
    target = resolve_device(model, device)
    vocab = vocab_size or int(model.config.vocab_size)
    generator = torch.Generator().manual_seed(seed)
    prefill: dict[str, float] = {}
    decode: dict[str, float] = {}
    with eval_mode(model), torch.inference_mode(), peak_memory(target) as memory:
        for batch in batch_sizes:
            tokens = torch.randint(0, vocab, (batch, seq_len), generator=generator).to(target)

            def forward(tokens: torch.Tensor = tokens) -> None:
                model(input_ids=tokens, use_cache=False)

            prefill[f"batch_{batch}"] = _median_seconds(forward, repeats, target) * 1e3
            if decode_steps > 0:
                seconds = _decode_seconds(model, tokens, decode_steps, repeats, target)
                decode[f"batch_{batch}"] = batch * decode_steps / max(seconds, 1e-9)
    return SpeedResult(
        device=str(target),
        seq_len=seq_len,
        repeats=repeats,
        decode_steps=decode_steps,
        prefill_latency_ms=prefill,
        decode_tokens_per_s=decode,
        peak_memory_mb=float(memory.get("peak_memory_mb", 0.0)),
        memory_method=str(memory.get("memory_method", "")),
    )
