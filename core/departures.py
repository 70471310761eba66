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

MEASURED_IN = "benchmarks/results/faithfulness-e4s64.json"
MEASURED_SPARSITIES = ("0.40", "0.50")


@dataclass(frozen=True)
class Interval:
    ratio: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.ratio:.3f} [{self.low:.3f}, {self.high:.3f}]"


@dataclass(frozen=True)
class Effect:
    """One departure measured alone on SmolLM2-135M: (WikiText-2 test, C4) at each of ``MEASURED_SPARSITIES``.

    ``ratio_name`` is the benchmark's name of the ratio; ``proxy`` says what was measured when the benchmark's
    reduced protocol could not take the setting to the paper's value itself.
    """

    ratio_name: str
    figures: dict[str, tuple[Interval, Interval]]
    proxy: str = ""

    def __str__(self) -> str:
        parts = [
            f"at {sparsity}: ×{wikitext2} WikiText-2 test, ×{c4} C4"
            for sparsity, (wikitext2, c4) in self.figures.items()
        ]
        proxy = f"; {self.proxy}" if self.proxy else ""
        return "; ".join(parts) + f" (SmolLM2-135M, {MEASURED_IN}{proxy})"


def _effect(ratio_name: str, *figures: tuple[float, float, float], proxy: str = "") -> Effect:
    """Figures in MEASURED_SPARSITIES order, WikiText-2 before C4 at each."""
    intervals = [Interval(*figure) for figure in figures]
    return Effect(
        ratio_name,
        {s: (intervals[2 * i], intervals[2 * i + 1]) for i, s in enumerate(MEASURED_SPARSITIES)},
        proxy,
    )


# Copied from MEASURED_IN (tests/test_departures.py checks every figure against it).
EFFECTS: dict[str, Effect] = {
    "normalization": _effect(
        "departures/gisp ÷ gisp, reference normalisation",
        (1.088, 1.055, 1.123),
        (1.023, 0.982, 1.064),
        (0.879, 0.852, 0.908),
        (0.977, 0.932, 1.022),
    ),
    "bias_compensation": _effect(
        "departure/compensation: gisp ÷ gisp without it",
        (0.689, 0.662, 0.718),
        (0.802, 0.774, 0.833),
        (0.678, 0.645, 0.708),
        (0.770, 0.736, 0.809),
    ),
    "reconstruction": _effect(
        "departure/refit: gisp ÷ gisp without it",
        (0.865, 0.835, 0.899),
        (0.902, 0.877, 0.929),
        (0.704, 0.681, 0.730),
        (0.758, 0.732, 0.785),
    ),
    "steps": _effect(
        "departures/gisp ÷ gisp, --paper-steps steps",
        (1.086, 1.054, 1.120),
        (1.079, 1.046, 1.113),
        (0.890, 0.856, 0.927),
        (0.885, 0.842, 0.926),
        proxy="measured as 8 steps against 12, not 20 against 112",
    ),
}


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
