"""Like-for-like quality on SmolLM2-135M: GISP against the faithful baselines, with paired intervals.

    python benchmarks/faithfulness.py                      # the full protocol (days on 2 CPU cores)
    python benchmarks/faithfulness.py --sparsities 0.3,0.5 --windows 96 --samples 16 --steps 8 \
        --paper-steps 12 --refit-samples 16 --out out/faithfulness   # the reduced run of the results file

Every comparison pairs methods with the same post-processing and the same calibration text:

- ``none``: no compensation, no refit: gisp (bias_compensation off), gisp-paper, wanda-sp;
- ``compensation``: bias compensation, no refit: gisp (its default), flap (always compensates);
- ``refit``: the least-squares refit of every checkpoint: gisp (default), gisp-paper, wanda-sp, flap.

All methods calibrate on WikiText-2 validation without its held-out tail (``quality_lib``), ``--samples``
windows of ``--seq-len`` tokens per scoring pass; gisp draws a fresh sample at each of its ``--steps``, the
one-shot methods read ``--oneshot-samples`` (default: samples × steps, the same number of tokens as gisp),
gisp-paper reads one fixed set of ``--samples`` windows at each of its ``--paper-steps``. Perplexity is
measured on the first ``--windows`` windows of 128 tokens of WikiText-2 test and of the C4 documents in
``../shared/datasets/c4`` (never calibrated on), keeping every window's mean loss, so each ratio of
perplexities between two methods gets a paired bootstrap 95 % interval over the same windows.
``--groups departures`` (with ``--departure-sparsities``) measures gisp's departures from gisp-paper one at a
time: gisp with its normalisation, or its step count, taken back to the paper's; compensation and the refit
are read off the like-for-like groups.
The full protocol: ``--windows 1024`` or more, sparsities 0.2 to 0.5, the paper's 112 steps of 2000×256
tokens for gisp-paper. Trajectories and per-window losses are cached under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality_lib as lib
from core.data.text import c4_texts
from core.eval.perplexity import token_nlls, tokenize_text, windows_of
from core.eval.runtime import deterministic, eval_mode
from core.pruning_spec import METHODS, Method, Normalization, PruneSettings

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Arm:
    """One pruned model family: a method's trajectory, read with or without the refit."""

    name: str
    method: Method
    compensation: bool  # gisp's switch (flap always compensates, the others never)
    refit: bool
    undo: str = ""  # departures group: which of gisp's departures from gisp-paper this arm takes back


GROUPS: dict[str, list[Arm]] = {
    "none": [
        Arm("gisp", Method.gisp, False, False),
        Arm("gisp-paper", Method.gisp_paper, False, False),
        Arm("wanda-sp", Method.wanda_sp, False, False),
    ],
    "compensation": [
        Arm("gisp", Method.gisp, True, False),
        Arm("flap", Method.flap, True, False),
    ],
    "refit": [
        Arm("gisp", Method.gisp, True, True),
        Arm("gisp-paper", Method.gisp_paper, False, True),
        Arm("wanda-sp", Method.wanda_sp, False, True),
        Arm("flap", Method.flap, True, True),
    ],
    # gisp (no compensation, no refit) with one of its departures from gisp-paper taken back at a time:
    # "gisp ÷ arm" below 1 means the departure helps. Compensation and refit are read off the groups above
    # ("departure/…" ratios); what is left (fresh draws, schedule shape, scoring details) is gisp-paper's
    # own row here, all departures at once.
    "departures": [
        Arm("gisp", Method.gisp, False, False),
        Arm("gisp, reference normalisation", Method.gisp, False, False, undo="normalization"),
        Arm("gisp, --paper-steps steps", Method.gisp, False, False, undo="steps"),
        Arm("gisp-paper", Method.gisp_paper, False, False),
    ],
}
DEFAULT_GROUPS = ("none", "compensation", "refit")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("out/faithfulness"))
    parser.add_argument("--sparsities", default="0.2,0.3,0.4,0.5")
    parser.add_argument("--groups", default=",".join(DEFAULT_GROUPS), help="of: " + ", ".join(GROUPS))
    parser.add_argument(
        "--departure-sparsities", default=None, help="sparsities of the departures group (default: all)"
    )
    parser.add_argument(
        "--methods", default=None, help="only these arms of each group (comma-separated; gisp is always run)"
    )
    parser.add_argument(
        "--arm-sparsities",
        default=None,
        help='narrow some arms to some of the sparsities, e.g. "flap=0.2;wanda-sp=0.3,0.4,0.5"',
    )
    parser.add_argument("--windows", type=int, default=1024, help="128-token windows per corpus")
    parser.add_argument("--c4-windows", type=int, default=None, help="C4's windows (default: --windows)")
    parser.add_argument("--samples", type=int, default=32, help="calibration windows per scoring pass")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20, help="gisp's steps")
    parser.add_argument("--oneshot-samples", type=int, default=None, help="default: samples × steps")
    parser.add_argument("--paper-steps", type=int, default=112)
    parser.add_argument("--paper-samples", type=int, default=None, help="default: --samples")
    parser.add_argument("--refit-samples", type=int, default=128)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--result", type=Path, default=None, help="JSON written here (default: results/)")
    return parser.parse_args(argv)


def settings_for(arm: Arm, args: argparse.Namespace, top: float) -> PruneSettings:
    common: dict[str, Any] = {
        "method": arm.method,
        "sparsities": [top],
        "seq_len": args.seq_len,
        "reconstruction": False,  # checkpoints are refitted (or not) when read: one trajectory serves both
    }
    if arm.method is Method.gisp:
        steps = args.paper_steps if arm.undo == "steps" else args.steps
        experimental = {"normalization": Normalization.reference} if arm.undo == "normalization" else {}
        return PruneSettings(
            **common,
            samples=args.samples,
            steps=steps,
            bias_compensation=arm.compensation,
            experimental=experimental,
        )
    if arm.method is Method.gisp_paper:
        samples = args.paper_samples or args.samples
        return PruneSettings(**common, samples=samples, steps=args.paper_steps)
    return PruneSettings(**common, samples=args.oneshot_samples or args.samples * args.steps)


@torch.no_grad()
def window_losses(model: torch.nn.Module, ids: torch.Tensor, window: int = lib.WINDOW) -> list[float]:
    """Mean next-token loss of every window (the perplexity protocol's windows, in order)."""
    losses: list[float] = []
    chunks = windows_of(ids, window)
    with eval_mode(model), deterministic():
        for start in range(0, chunks.size(0), 8):
            nll = token_nlls(model, chunks[start : start + 8]).double()
            losses += nll.view(nll.shape[0], -1).mean(1).tolist()
    return losses


def paired_ratio(a: list[float], b: list[float], resamples: int, seed: int = 0) -> dict[str, float]:
    """ppl(a) / ppl(b) over the same windows, and its paired bootstrap 95 % interval (windows resampled)."""
    differences = [x - y for x, y in zip(a, b)]
    n = len(differences)
    rng = random.Random(seed)
    ratios = sorted(
        math.exp(sum(differences[rng.randrange(n)] for _ in range(n)) / n) for _ in range(resamples)
    )
    return {
        "ratio": math.exp(sum(differences) / n),
        "low": ratios[int(0.025 * resamples)],
        "high": ratios[min(resamples - 1, int(0.975 * resamples))],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(0)
    sparsities = sorted(float(s) for s in args.sparsities.split(","))
    groups = {name: _members(GROUPS[name], args.methods) for name in args.groups.split(",")}
    narrowed = _arm_sparsities(args.arm_sparsities)
    _check_narrowing(narrowed, groups, sparsities)
    started = time.perf_counter()
    loaded, split, _evaluator = lib.smollm2_context()
    corpora = {
        "wikitext2-test": tokenize_text(loaded.tokenizer, lib.wikitext2_text("test")),
        "c4": tokenize_text(loaded.tokenizer, "\n\n".join(c4_texts())),
    }
    counts = {"wikitext2-test": args.windows, "c4": args.c4_windows or args.windows}
    corpora = {name: ids[: counts[name] * lib.WINDOW] for name, ids in corpora.items()}
    losses_cache = args.out / "losses"
    losses_cache.mkdir(parents=True, exist_ok=True)

    def losses_of(key: str, build: Any) -> dict[str, list[float]]:
        cached = _cached_losses(losses_cache, key, counts)
        if cached is not None:
            return cached
        model = build()
        result = {name: window_losses(model, ids) for name, ids in corpora.items()}
        sizes = sorted(set(counts.values()))
        (losses_cache / f"{key}-{'-'.join(map(str, sizes))}.json").write_text(json.dumps(result))
        return result

    dense = losses_of("dense", lambda: loaded.model)
    runs: dict[tuple[Method, bool, str, float], lib.CachedRun] = {}
    arms: dict[str, dict[str, dict[str, list[float]]]] = {}
    for group, members in groups.items():
        at = sparsities
        if group == "departures" and args.departure_sparsities:
            at = sorted(float(s) for s in args.departure_sparsities.split(","))
        for arm in members:
            for sparsity in narrowed.get(arm.name, at):
                # Nested methods: one run to the largest target serves every sparsity. Wanda-sp prunes the same
                # fraction of every layer, measured layer after layer, from the dense model to its one target:
                # a run per sparsity (the prefix of a run to 50 % is not Wanda-sp at 20 %).
                top = sparsity if METHODS[arm.method].per_target else sparsities[-1]
                run_key = (arm.method, arm.compensation, arm.undo, top)
                if run_key not in runs:
                    settings = settings_for(arm, args, top)
                    runs[run_key] = lib.pruned_run(
                        loaded, split.calibration, settings, args.out, label=arm.name
                    )
                run = runs[run_key]
                key = f"{run.key}-{sparsity:.3f}-{'refit' if arm.refit else 'plain'}-r{args.refit_samples}"
                arms.setdefault(f"{group}/{arm.name}", {})[f"{sparsity:.2f}"] = losses_of(
                    key,
                    lambda run=run, sparsity=sparsity, arm=arm: _checkpoint(
                        loaded, split, run, sparsity, arm, args
                    ),
                )
    result: dict[str, Any] = {
        "command": "python benchmarks/faithfulness.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": lib.machine_info(),
        "protocol": {
            key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
        },
        "windows": {name: len(values) for name, values in dense.items()},
        "dense_perplexity": {name: math.exp(sum(v) / len(v)) for name, v in dense.items()},
        "prune_seconds": {
            f"{m.value}{'' if c else ' (no compensation)'}{f' (undo {u})' if u else ''} to {top:.2f}": r.prune_seconds
            for (m, c, u, top), r in runs.items()
        },
        "perplexity": {},
        "ratios": {},
    }
    for arm_name, by_sparsity in arms.items():
        for sparsity, by_corpus in by_sparsity.items():
            for corpus, values in by_corpus.items():
                result["perplexity"].setdefault(arm_name, {}).setdefault(sparsity, {})[corpus] = math.exp(
                    sum(values) / len(values)
                )
    for group, members in groups.items():
        gisp = f"{group}/gisp"
        for arm in members:
            other = f"{group}/{arm.name}"
            if other == gisp:
                continue
            for sparsity in arms[gisp]:
                if sparsity not in arms[other]:
                    continue
                for corpus in corpora:
                    ratio = paired_ratio(
                        arms[gisp][sparsity][corpus], arms[other][sparsity][corpus], args.bootstrap
                    )
                    result["ratios"].setdefault(f"{gisp} ÷ {arm.name}", {}).setdefault(sparsity, {})[
                        corpus
                    ] = ratio
        if group != "departures" and "gisp-paper" in {arm.name for arm in members}:
            paper = f"{group}/gisp-paper"
            for arm in members:
                if arm.name in ("gisp", "gisp-paper"):
                    continue
                for sparsity in arms[paper]:
                    if sparsity not in arms[f"{group}/{arm.name}"]:
                        continue
                    for corpus in corpora:
                        ratio = paired_ratio(
                            arms[paper][sparsity][corpus],
                            arms[f"{group}/{arm.name}"][sparsity][corpus],
                            args.bootstrap,
                        )
                        result["ratios"].setdefault(f"{paper} ÷ {arm.name}", {}).setdefault(sparsity, {})[
                            corpus
                        ] = ratio
    _post_processing_departures(arms, result["ratios"], corpora, args.bootstrap)
    result["seconds"] = time.perf_counter() - started
    out = args.result or RESULTS / f"faithfulness-{result['commit'] or 'local'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    print(
        json.dumps(
            {"ratios": result["ratios"], "perplexity": result["perplexity"]}, indent=1, ensure_ascii=False
        )
    )
    print(f"written to {out}")
    return 0


def _members(arms: list[Arm], methods: str | None) -> list[Arm]:
    """A group's arms, narrowed to ``--methods`` (gisp stays: every ratio of the group is gisp's)."""
    if methods is None:
        return arms
    wanted = {name.strip() for name in methods.split(",")}
    return [arm for arm in arms if arm.name == "gisp" or arm.name in wanted]


def _cached_losses(cache: Path, key: str, counts: dict[str, int]) -> dict[str, list[float]] | None:
    """Per-window losses of ``key`` from any earlier run that measured at least ``counts`` windows.

    Windows are measured one by one in text order, so the first n of a longer run are the n windows of a
    shorter one."""
    for path in sorted(cache.glob(f"{key}-*.json")):
        if not path.stem[len(key) + 1 :].replace("-", "").isdigit():
            continue
        losses = json.loads(path.read_text())
        if all(len(losses.get(name, [])) >= count for name, count in counts.items()):
            return {name: losses[name][:count] for name, count in counts.items()}
    return None


def _arm_sparsities(spec: str | None) -> dict[str, list[float]]:
    """``--arm-sparsities``: arm name → the sparsities it is measured at (every target when not named)."""
    narrowed: dict[str, list[float]] = {}
    for part in (spec or "").split(";"):
        if part.strip():
            name, _, values = part.partition("=")
            narrowed[name.strip()] = sorted(float(value) for value in values.split(","))
    return narrowed


def _check_narrowing(
    narrowed: dict[str, list[float]], groups: dict[str, list[Arm]], targets: list[float]
) -> None:
    """Refuse a narrowing that would be silently ignored (no such arm) or measure off ``--sparsities``.

    A nested arm is read off one run to the largest of ``--sparsities``, so a target beyond it cannot be read."""
    arms = {arm.name for members in groups.values() for arm in members}
    for name, values in narrowed.items():
        if name not in arms:
            raise SystemExit(
                f"--arm-sparsities: no arm {name!r} in the chosen groups ({', '.join(sorted(arms))})"
            )
        if not set(values) <= set(targets):
            raise SystemExit(f"--arm-sparsities: {name}'s {values} must be among --sparsities {targets}")


def _post_processing_departures(
    arms: dict[str, dict[str, dict[str, list[float]]]],
    ratios: dict[str, Any],
    corpora: dict[str, Any],
    resamples: int,
) -> None:
    """gisp's two post-processing departures from gisp-paper, each alone: compensation, then the refit."""
    steps = {
        "departure/compensation: gisp ÷ gisp without it": ("compensation/gisp", "none/gisp"),
        "departure/refit: gisp ÷ gisp without it": ("refit/gisp", "compensation/gisp"),
    }
    for name, (with_it, without) in steps.items():
        if with_it not in arms or without not in arms:
            continue
        for sparsity in arms[with_it]:
            if sparsity not in arms[without]:
                continue
            for corpus in corpora:
                ratios.setdefault(name, {}).setdefault(sparsity, {})[corpus] = paired_ratio(
                    arms[with_it][sparsity][corpus], arms[without][sparsity][corpus], resamples
                )


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown tables: perplexities, then every paired ratio with its 95 % interval."""
    corpora = list(result["dense_perplexity"])
    lines = [
        f"Dense perplexity: {', '.join(f'{c} {v:.2f}' for c, v in result['dense_perplexity'].items())} "
        f"({', '.join(f'{c} {n} windows' for c, n in result['windows'].items())}).",
        "",
        "| group / method | sparsity | " + " | ".join(f"ppl {c}" for c in corpora) + " |",
        "|---|---|" + "---|" * len(corpora),
    ]
    for arm, by_sparsity in result["perplexity"].items():
        for sparsity, by_corpus in by_sparsity.items():
            cells = " | ".join(f"{by_corpus[c]:.1f}" for c in corpora)
            lines.append(f"| {arm} | {sparsity} | {cells} |")
    lines += [
        "",
        "| ratio of perplexities | sparsity | " + " | ".join(corpora) + " |",
        "|---|---|" + "---|" * len(corpora),
    ]
    for name, by_sparsity in result["ratios"].items():
        for sparsity, by_corpus in by_sparsity.items():
            cells = " | ".join(
                f"{by_corpus[c]['ratio']:.3f} [{by_corpus[c]['low']:.3f}, {by_corpus[c]['high']:.3f}]"
                for c in corpora
            )
            lines.append(f"| {name} | {sparsity} | {cells} |")
    return "\n".join(lines) + "\n"


def _commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _checkpoint(
    loaded: Any, split: lib.WikiSplit, run: lib.CachedRun, sparsity: float, arm: Arm, args: argparse.Namespace
) -> torch.nn.Module:
    trajectory = run.trajectory
    if arm.refit:
        settings = trajectory.settings.model_copy(update={"reconstruction_samples": args.refit_samples})
        trajectory = dataclasses.replace(trajectory, settings=settings)
    return lib.model_at(
        loaded, trajectory, sparsity, "nonuniform", refit=arm.refit, calibration=split.calibration
    )


if __name__ == "__main__":
    sys.exit(main())
