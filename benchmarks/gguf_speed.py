"""llama.cpp speed of pruned SmolLM2-135M-Instruct GGUF exports against the dense model's, side by side in one run.

    python benchmarks/gguf_speed.py --run-dir runs/smol --threads 1 --repeats 3 --json benchmarks/results/gguf-speed.json

``--run-dir`` is a `gisp prune` output holding ``sparsity-0.4`` and ``sparsity-0.5`` (BENCHMARKS.md gives the
command). The dense model is the imported SmolLM2 folder, exported by the same code (stock ``llama``
architecture). Every model is written as f16 and q8_0; each measurement is repeated ``--repeats`` times in
round-robin order (dense, 40 %, 50 %, dense, ...) so load on a shared machine hits all alike, and the fastest
run of each is kept (other processes can only slow a run down; every run is in the JSON), with the ratio of
medians beside it. Prompt processing:
one 512-token batch, fastest of 3 per run; generation: 128 tokens one at a time after a 16-token prompt.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPT_TOKENS = 512
GENERATED_TOKENS = 128
PROMPT_TRIES = 3


def export_all(run_dir: Path, out: Path, types: list[str]) -> dict[str, dict[str, Path]]:
    from core.assets import smollm2_model_dir
    from core.engine.export import export_gguf

    sources = {"dense": smollm2_model_dir(), "40%": run_dir / "sparsity-0.4", "50%": run_dir / "sparsity-0.5"}
    return {
        name: {t: export_gguf(folder, out / f"{name.strip('%')}-{t}.gguf", gguf_type=t) for t in types}
        for name, folder in sources.items()
    }


def measure(path: Path, threads: int) -> tuple[float, float]:
    """(prompt tokens per second, generated tokens per second) of one fresh model instance."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path), n_ctx=1024, n_batch=PROMPT_TOKENS, n_threads=threads, verbose=False
    )
    tokens = [(7 * i + 11) % 40000 + 100 for i in range(PROMPT_TOKENS)]
    llm.eval(tokens[:8])  # warm-up: page the weights in
    prompt = 0.0
    for _ in range(PROMPT_TRIES):  # the fastest of a few: bursts of other work on a shared CPU only slow it
        llm.reset()
        start = time.perf_counter()
        llm.eval(tokens)
        prompt = max(prompt, PROMPT_TOKENS / (time.perf_counter() - start))
    llm.reset()
    llm.eval(tokens[:16])
    start = time.perf_counter()
    for index in range(GENERATED_TOKENS):
        llm.eval([tokens[16 + index]])
    generation = GENERATED_TOKENS / (time.perf_counter() - start)
    llm.close()
    return prompt, generation


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--types", default="f16,q8_0")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()
    types = args.types.split(",")
    with tempfile.TemporaryDirectory(prefix="gguf-speed-") as tmp:
        files = export_all(args.run_dir, Path(tmp), types)
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.repeats):
            for gguf_type in types:
                for name in files:
                    samples.setdefault((name, gguf_type), []).append(
                        measure(files[name][gguf_type], args.threads)
                    )
        results = _summarise(files, samples, types)
    _print(results, types)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_context(args) | {"results": results}, indent=1))


def _summarise(files: dict[str, dict[str, Path]], samples: dict, types: list[str]) -> list[dict[str, Any]]:
    rows = []
    for gguf_type in types:
        dense = samples[("dense", gguf_type)]
        dense_pp = max(s[0] for s in dense)
        dense_tg = max(s[1] for s in dense)
        dense_pp_median = statistics.median(s[0] for s in dense)
        dense_tg_median = statistics.median(s[1] for s in dense)
        dense_size = files["dense"][gguf_type].stat().st_size
        for name in files:
            runs = samples[(name, gguf_type)]
            pp, tg = max(s[0] for s in runs), max(s[1] for s in runs)
            size = files[name][gguf_type].stat().st_size
            rows.append(
                {
                    "model": name,
                    "type": gguf_type,
                    "file_mb": round(size / 1e6, 1),
                    "size_ratio": round(size / dense_size, 3),
                    "pp512_tok_s": round(pp, 1),
                    "pp_speedup": round(pp / dense_pp, 3),
                    "tg128_tok_s": round(tg, 1),
                    "tg_speedup": round(tg / dense_tg, 3),
                    "pp_median_speedup": round(statistics.median(s[0] for s in runs) / dense_pp_median, 3),
                    "tg_median_speedup": round(statistics.median(s[1] for s in runs) / dense_tg_median, 3),
                    "pp_runs": [round(s[0], 1) for s in runs],
                    "tg_runs": [round(s[1], 1) for s in runs],
                }
            )
    return rows


def _print(results: list[dict[str, Any]], types: list[str]) -> None:
    print(
        f"{'model':<7}{'type':<6}{'file MB':>9}{'size':>7}{'pp512 tok/s':>13}{'×dense':>8}{'tg128 tok/s':>13}{'×dense':>8}"
        f"{'pp ×dense (medians)':>21}{'tg ×dense (medians)':>21}"
    )
    for row in results:
        print(
            f"{row['model']:<7}{row['type']:<6}{row['file_mb']:>9}{row['size_ratio']:>7.2f}"
            f"{row['pp512_tok_s']:>13}{row['pp_speedup']:>8.2f}{row['tg128_tok_s']:>13}{row['tg_speedup']:>8.2f}"
            f"{row['pp_median_speedup']:>21.2f}{row['tg_median_speedup']:>21.2f}"
        )


def _context(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "command": " ".join(["python", *sys.argv]),
        "commit": commit,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "threads": args.threads,
        "repeats": args.repeats,
        "llama_cpp_python": llama_cpp.__version__,
    }


if __name__ == "__main__":
    main()
