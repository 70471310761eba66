"""How a `gisp` run departs from `gisp-paper` (the authors' GISP), and what each departure measured.

`gisp`, the product default, keeps the paper's first-order score and global ranking but changes several of
its settings. Reports and model cards list the departures a run used, so nobody mistakes its figures for the
paper's method, and give what each one moved when measured alone: held-out perplexity of `gisp` with the
departure ÷ `gisp` without it (below 1: the departure helps), on WikiText-2 test and on C4, with the paired
bootstrap 95 % interval over the same windows. The figures are copied from the benchmark's results file
(``MEASURED_IN``); ``tests/test_departures.py`` checks each one against that file.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.pruning_spec import (
    PAPER_SAMPLES,
    PAPER_SEQ_LEN,
    PAPER_STEPS,
    Method,
    Normalization,
    PruneSettings,
)

MEASURED_IN = "benchmarks/results/faithfulness-departures.json"
MEASURED_SPARSITY = "0.50"


@dataclass(frozen=True)
class Interval:
    ratio: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Effect:
    """One departure measured alone at ``MEASURED_SPARSITY`` on SmolLM2-135M (the benchmark's ratio name)."""

    ratio_name: str
    wikitext2: Interval
    c4: Interval

    def __str__(self) -> str:
        return (
            f"×{self.wikitext2} WikiText-2 test, ×{self.c4} C4 at sparsity {MEASURED_SPARSITY} "
            f"(SmolLM2-135M, {MEASURED_IN})"
        )


# Filled from MEASURED_IN; keys are the departures' names below.
EFFECTS: dict[str, Effect] = {}


@dataclass(frozen=True)
class Departure:
    name: str
    this_run: str
    paper: str
    measured: str

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "this_run": self.this_run, "paper": self.paper, "measured": self.measured}


def departures_from_paper(settings: PruneSettings) -> list[Departure]:
    """The ways this run's settings differ from `gisp-paper`'s; empty for every other method."""
    if settings.method is not Method.gisp:
        return []
    found: list[Departure] = []

    def add(name: str, this_run: str, paper: str) -> None:
        effect = EFFECTS.get(name)
        found.append(Departure(name, this_run, paper, str(effect) if effect else "not measured alone"))

    if settings.experimental.normalization is Normalization.params:
        add(
            "normalization",
            "each block's own parameter count (heads with their share of the KV head; channels 3·hidden)",
            "the code's constants: heads ÷ 4·head_dim·hidden, channels ÷ 3·intermediate",
        )
    add("gqa_heads", "q rows, o columns and a share of the k, v rows", "q rows and o columns (k, v skipped)")
    if settings.bias_compensation:
        add("bias_compensation", "on, scores centred by it", "none")
    if settings.reconstruction:
        add("reconstruction", f"least-squares refit on {settings.reconstruction_samples} sequences", "none")
    add(
        "calibration",
        f"a fresh draw of {settings.samples} × {settings.seq_len} tokens at each step",
        f"the whole set ({PAPER_SAMPLES} × {PAPER_SEQ_LEN} tokens) at every step",
    )
    if settings.step_count != PAPER_STEPS:
        add("steps", f"{settings.step_count} steps", f"{PAPER_STEPS} steps")
    add(
        "schedule",
        "linear in parameter sparsity, every target a step boundary",
        "linear in the count of structures up to 70 % of them; the k-th lowest score of all",
    )
    return found
