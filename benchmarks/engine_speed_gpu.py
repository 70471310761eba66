"""Engine speed on a GPU: a Llama-2-7B-shaped model with random weights in bf16, every figure measured in one run.

    python benchmarks/engine_speed_gpu.py --shape llama2-7b --device cuda --dtype bfloat16

Random weights change no shape and no kernel, so step time, FLOP/s and memory are those of the real
model; only the scores (and so which structures go) are arbitrary. Printed, each beside its reference:

1. the bf16 matrix-product rate of this GPU (8192³, measured here): the ceiling for FLOP/s;
2. one GISP step (gradients of the decoder weights over ``samples × seq_len`` tokens, Taylor scores,
   global ranking, slicing) against a plain forward+backward of the stock model with every parameter
   trainable (what a fine-tuning loop does): time, achieved FLOP/s, peak memory above the weights;
3. whole ``prune`` runs to 50 % with the engine's defaults on synthetic text (a tokenizer trained here):
   slicing as it goes against masking only, and the least-squares refit of the 50 % checkpoint;
4. a 50 % model (one GISP selection on the step's scores, sliced) against the dense stock model and the
   dense model in the shipped class: prefill latency and decode tokens/s at batch 1 and 8.

FLOPs counted: forward ``2·matmul params + attention`` per token (``core.eval.efficiency``); a plain
step is 3× forward; a GISP step skips the LM head's weight gradient, ``3× forward − 2·lm_head params``.
``--shape tiny --device cpu`` runs the same code in seconds anywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES: dict[str, dict[str, Any]] = {
    "llama2-7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
    ),
    "llama3-8b": dict(  # grouped-query attention, 4 query heads per KV head
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        max_position_embeddings=8192,
    ),
    "tiny": dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=1024,
    ),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], Any], device: torch.device, repeats: int) -> list[float]:
    """Seconds per call after one untimed warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        run()
        synchronize(device)
        times.append(time.perf_counter() - started)
    return times


def peak_above(device: torch.device, run: Callable[[], Any]) -> tuple[Any, float]:
    """(result, peak MiB allocated above what was allocated before) on CUDA; NaN elsewhere."""
    if device.type != "cuda":
        return run(), float("nan")
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = run()
    synchronize(device)
    return result, (torch.cuda.max_memory_allocated(device) - before) / 2**20


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int, repeats: int = 10) -> float:
    """FLOP/s of one square matrix product: the ceiling the step's FLOP/s is read against."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = statistics.median(timed(lambda: a @ b, device, repeats))
    return 2 * size**3 / seconds


def build_model(shape: str, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=False)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def random_batches(vocab: int, samples: int, seq_len: int, batch_size: int, step: int):  # type: ignore[no-untyped-def]
    """Calibration-shaped batches of random tokens; each sequence weighs 1/samples, as the engine's pool."""
    from core.engine.objectives import Batch

    generator = torch.Generator().manual_seed(step)
    batches = []
    for start in range(0, samples, batch_size):
        rows = min(batch_size, samples - start)
        ids = torch.randint(0, vocab, (rows, seq_len), generator=generator)
        batches.append(Batch(ids, torch.ones_like(ids), ids.clone(), torch.full((rows,), 1.0 / samples)))
    return batches


def measure_plain(
    model: torch.nn.Module, batches: list, device: torch.device, repeats: int
) -> dict[str, Any]:
    """Forward with labels and backward, every parameter trainable."""
    model.requires_grad_(True)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        for batch in batches:
            batch = batch.to(device)
            model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
            ).loss.backward()

    step()  # warm-up outside the memory window: the first call allocates the gradients
    model.zero_grad(set_to_none=True)
    _, peak = peak_above(device, step)
    seconds = timed(step, device, repeats)
    model.zero_grad(set_to_none=True)
    model.requires_grad_(False)
    return {"seconds": seconds, "peak_mib_above_weights": peak}


def measure_gisp_step(
    model: torch.nn.Module, batches: list, device: torch.device, repeats: int, settings: Any
) -> tuple[dict[str, Any], list]:
    """Gradients, scores, ranking and slicing of 0.5 % per step: what every GISP step does."""
    from core.engine.architectures import geometry_of, to_gisp_model
    from core.engine.methods.gradients import accumulate_gradients, prepare_for_gradients
    from core.engine.methods.taylor import taylor_scores
    from core.engine.ranking import ScoreTable, select
    from core.engine.schedule import protected_layers
    from core.engine.slicing import slice_model
    from core.engine.structures import PruningState

    geometry = geometry_of(model.config)
    working = to_gisp_model(model)  # shares the weights; slicing replaces tensors, the base stays whole
    eligible = [
        i for i in range(geometry.num_layers) if i not in protected_layers(settings, geometry.num_layers)
    ]
    prepare_for_gradients(working)
    holder: dict[str, Any] = {"state": PruningState.dense(geometry), "ranked": None}

    def step() -> None:
        state = holder["state"]
        accumulate_gradients(working, batches)
        scores = taylor_scores(working, geometry, settings.experimental.normalization)
        ranked = ScoreTable.from_layer_scores(state, scores, geometry, True)
        new_state, _, _ = select(state, ranked, eligible, state.sparsity() + 0.005)
        slice_model(working, state, new_state)
        holder["state"], holder["ranked"] = new_state, ranked

    _, peak = peak_above(device, step)  # the first step: gradients allocated from nothing, like every step
    seconds = timed(step, device, repeats)
    working.zero_grad(set_to_none=True)
    measured = {"seconds": seconds, "peak_mib_above_weights": peak, "sparsity": holder["state"].sparsity()}
    return measured, [holder["state"], holder["ranked"], eligible]


def synthetic_calibration(vocab_size: int, seed: int = 0, words: int = 200_000):  # type: ignore[no-untyped-def]
    """Random text over a 2,000-word vocabulary and a BPE tokenizer trained on it, built offline in seconds.

    A whole ``prune`` call needs items and a tokenizer; their content only decides which structures go.
    """
    import random
    import string

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from core.data.calibration import TextItem

    rng = random.Random(seed)
    vocabulary = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(2000)]
    text = " ".join(rng.choices(vocabulary, k=words))
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(
        [text], trainers.BpeTrainer(vocab_size=min(4000, vocab_size), special_tokens=["<unk>", "</s>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", pad_token="</s>"
    )
    return [TextItem(text=text)], tokenizer


def measure_runs(model: torch.nn.Module, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Whole ``prune`` calls to 50 % with the engine's defaults: slicing as it goes against masking only,
    then the refitted 50 % checkpoint (``reconstruction``), each timed with its peak memory."""
    from core.engine.loading import LoadedModel
    from core.engine.masking import MASKED
    from core.engine.materialize import checkpoint_model
    from core.engine.pruner import prune
    from core.engine.views import SLICED
    from core.pruning_spec import PruneSettings

    items, tokenizer = synthetic_calibration(model.config.vocab_size)
    loaded = LoadedModel(model, tokenizer, {"id": f"random-{args.shape}", "ref": None, "source": "benchmark"})
    settings = PruneSettings(
        sparsities=[0.5],
        steps=args.run_steps,
        samples=args.samples,
        seq_len=args.seq_len,
        reconstruction_samples=args.refit_samples,
    )
    out: dict[str, Any] = {}
    trajectory = None
    for name, view in (("sliced", SLICED), ("masked", MASKED)):
        synchronize(device)
        started = time.perf_counter()
        result, peak = peak_above(
            device, lambda view=view: prune(loaded, items, settings, batch_size=args.batch_size, view=view)
        )
        synchronize(device)
        out[name] = {
            "seconds": time.perf_counter() - started,
            "step_seconds": [step.seconds for step in result.steps],
            "sparsity": result.steps[-1].sparsity,
            "peak_mib_above_weights": peak,
        }
        trajectory = trajectory or result
        if device.type == "cuda":
            torch.cuda.empty_cache()
    started = time.perf_counter()
    checkpoint, peak = peak_above(
        device, lambda: checkpoint_model(loaded, trajectory, trajectory.state_at(0.5), items)
    )
    synchronize(device)
    out["refit"] = {
        "seconds": time.perf_counter() - started,
        "tokens": args.refit_samples * args.seq_len,
        "peak_mib_above_weights": peak,
        "parameters": sum(p.numel() for p in checkpoint.parameters()),
    }
    return out


def half_pruned(model: torch.nn.Module, ranked: list, eligible: list) -> torch.nn.Module:
    """The shipped class sliced to 50 % by one global selection on the last step's scores."""
    from core.engine.architectures import geometry_of, to_gisp_model
    from core.engine.ranking import select
    from core.engine.slicing import slice_model
    from core.engine.structures import PruningState

    pruned = to_gisp_model(model)
    start = PruningState.dense(geometry_of(model.config))
    ranked = ranked.alive_in(start)
    target, _, _ = select(start, ranked, eligible, 0.5)
    slice_model(pruned, start, target)
    pruned.requires_grad_(False)
    return pruned.eval()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument("--samples", type=int, default=32, help="sequences per GISP step")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--latency-seq-lens", default="128,1024")
    parser.add_argument("--matmul-size", type=int, default=8192)
    parser.add_argument("--run-steps", type=int, default=10, help="steps of each whole prune run")
    parser.add_argument(
        "--refit-samples", type=int, default=128, help="sequences the 50 %% checkpoint is refitted on"
    )
    parser.add_argument("--only", default="step,run,latency", help="which parts to run")
    parser.add_argument("--json", type=Path, help="also write the results here (after every part)")
    args = parser.parse_args()

    from core.eval.efficiency import model_size

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    rate = matmul_rate(device, dtype, args.matmul_size)
    results["matmul_tflops"] = rate / 1e12
    print(
        f"{results.get('gpu', device)}: {args.matmul_size}³ {args.dtype} matrix product {rate / 1e12:.0f} TFLOP/s"
    )

    model = build_model(args.shape, device, dtype)
    size = model_size(model, args.seq_len)
    results["model"] = {"shape": args.shape, **size.to_dict()}
    print(
        f"{args.shape}: {size.parameters / 1e9:.2f} B parameters, {size.flops_per_token / 1e9:.2f} GFLOP/token forward"
    )

    only = set(args.only.split(","))

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    save()
    ranked, eligible = None, None
    if only & {"step", "latency"}:
        ranked, eligible = report_step(model, args, device, size, rate, results)
        save()
    if "run" in only:
        runs = measure_runs(model, args, device)
        results["run"] = runs
        sliced, masked, refit = runs["sliced"], runs["masked"], runs["refit"]
        print(
            f"prune to 50 % in {args.run_steps} steps: sliced {sliced['seconds']:.1f} s (median step "
            f"{statistics.median(sliced['step_seconds']):.2f} s, peak {sliced['peak_mib_above_weights']:.0f} MiB "
            f"above the weights), masked {masked['seconds']:.1f} s: masked / sliced "
            f"{masked['seconds'] / sliced['seconds']:.2f}"
        )
        print(
            f"refitted 50 % checkpoint ({refit['tokens']} tokens): {refit['seconds']:.1f} s, peak "
            f"{refit['peak_mib_above_weights']:.0f} MiB above the weights"
        )
        save()
    if "latency" in only:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        results["latency"] = report_latency(model, half_pruned(model, ranked, eligible), args, device)
        save()


def report_step(
    model: torch.nn.Module,
    args: argparse.Namespace,
    device: torch.device,
    size: Any,
    rate: float,
    results: dict,
) -> tuple[Any, list[int]]:
    from core.pruning_spec import PruneSettings

    tokens = args.samples * args.seq_len
    batches = random_batches(model.config.vocab_size, args.samples, args.seq_len, args.batch_size, step=0)
    plain = measure_plain(model, batches, device, args.repeats)
    settings = PruneSettings(sparsities=[0.5], samples=args.samples, seq_len=args.seq_len)
    gisp, (_, ranked, eligible) = measure_gisp_step(model, batches, device, args.repeats, settings)
    flops = {
        "plain": 3 * size.flops_per_token * tokens,
        "gisp": (3 * size.flops_per_token - 2 * model.lm_head.weight.numel()) * tokens,
    }
    for name, measured in (("plain", plain), ("gisp", gisp)):
        median = statistics.median(measured["seconds"])
        measured["tflops_per_s"] = flops[name] / median / 1e12
        measured["of_matmul_rate"] = flops[name] / median / rate
    results["step"] = {"tokens": tokens, "plain": plain, "gisp": gisp}
    p, g = statistics.median(plain["seconds"]), statistics.median(gisp["seconds"])
    print(
        f"step over {args.samples}×{args.seq_len} tokens: GISP {g:.3f} s ({gisp['tflops_per_s']:.0f} TFLOP/s, "
        f"{gisp['of_matmul_rate']:.0%} of the matrix-product rate), plain fwd+bwd {p:.3f} s "
        f"({plain['tflops_per_s']:.0f} TFLOP/s): ratio {g / p:.3f}"
    )
    print(
        f"peak memory above the weights: GISP {gisp['peak_mib_above_weights']:.0f} MiB, plain "
        f"{plain['peak_mib_above_weights']:.0f} MiB: ratio "
        f"{gisp['peak_mib_above_weights'] / plain['peak_mib_above_weights']:.3f}"
    )
    return ranked, eligible


def report_latency(
    model: torch.nn.Module, pruned: torch.nn.Module, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    """Prefill and decode of the dense stock model, the dense model in the shipped class, and the 50 % one."""
    from core.engine.architectures import to_gisp_model
    from core.eval.efficiency import measure_speed, model_size

    candidates = (("dense", model), ("dense_shipped_class", to_gisp_model(model)), ("pruned_50", pruned))
    latency: dict[str, Any] = {}
    for seq_len in (int(s) for s in args.latency_seq_lens.split(",")):
        row = {}
        for name, candidate in candidates:
            speed = measure_speed(candidate, device=device, seq_len=seq_len, repeats=args.repeats)
            row[name] = {**speed.to_dict(), "parameters": model_size(candidate, seq_len).parameters}
        latency[str(seq_len)] = row
        for batch in ("batch_1", "batch_8"):
            ms = [row[name]["prefill_latency_ms"][batch] for name, _ in candidates]
            tps = [row[name]["decode_tokens_per_s"][batch] for name, _ in candidates]
            print(
                f"seq {seq_len} {batch}: prefill dense {ms[0]:.1f} ms, shipped class dense {ms[1]:.1f} ms, "
                f"50 % {ms[2]:.1f} ms ({ms[2] / ms[0]:.2f}×); decode tokens/s {tps[0]:.0f} / {tps[1]:.0f} / "
                f"{tps[2]:.0f} ({tps[2] / tps[0]:.2f}×)"
            )
    parameters = [row[name]["parameters"] for name, _ in candidates]
    print(f"50 % checkpoint: {parameters[2] / 1e9:.2f} B parameters (dense {parameters[0] / 1e9:.2f} B)")
    return latency


if __name__ == "__main__":
    main()
