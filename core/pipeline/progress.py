"""Progress and ETA over a whole job: loading, pruning, building checkpoints, evaluating, uploading.

A phase's remaining time is its remaining units times the mean time of its units so far. A phase that has
not run yet is estimated from what has: a checkpoint's refit reads ``reconstruction_samples`` sequences
forward only, about a third of a pruning step's forward and backward over ``samples`` sequences; a pruned
model's evaluation costs about what the dense model's did (evaluated first for that reason). Where nothing
can be estimated yet the ETA is None rather than a guess.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from core.jobs.states import Phase

FORWARD_SHARE_OF_A_STEP = 1 / 3


@dataclass
class PhaseProgress:
    phase: Phase
    done: int
    total: int
    eta_seconds: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "phase": self.phase.value,
            "done": self.done,
            "total": self.total,
            "eta_seconds": self.eta_seconds,
        }


@dataclass
class ProgressTracker:
    """Counts units per phase (steps, checkpoints, evaluated models) and times them."""

    units: dict[Phase, int]
    refit_share: float = 1.0  # reconstruction_samples / samples: a refit's reading against a step's
    report: Callable[[PhaseProgress], None] = lambda _progress: None
    phase: Phase = Phase.queued
    done: dict[Phase, int] = field(default_factory=dict)
    seconds: dict[Phase, float] = field(default_factory=dict)
    _started: float = field(default_factory=time.monotonic)

    def start(self, phase: Phase) -> None:
        """Enter ``phase`` (again: building and evaluating alternate, one checkpoint at a time)."""
        self.phase = phase
        self.done.setdefault(phase, 0)
        self._started = time.monotonic()
        self.report(self.current())

    def unit_done(self, seconds: float | None = None) -> None:
        """One unit of the current phase finished (``seconds`` when the caller timed it itself)."""
        elapsed = time.monotonic() - self._started if seconds is None else seconds
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + elapsed
        self.done[self.phase] = self.done.get(self.phase, 0) + 1
        self._started = time.monotonic()
        self.report(self.current())

    def current(self) -> PhaseProgress:
        return PhaseProgress(
            self.phase, self.done.get(self.phase, 0), self.units.get(self.phase, 0), self.eta()
        )

    def _unit_seconds(self, phase: Phase) -> float | None:
        if self.done.get(phase):
            return self.seconds[phase] / self.done[phase]
        if phase is Phase.building_checkpoints and self.done.get(Phase.pruning):
            step = self.seconds[Phase.pruning] / self.done[Phase.pruning]
            return step * FORWARD_SHARE_OF_A_STEP * self.refit_share
        if phase is Phase.uploading:
            return 0.0
        return None

    def eta(self) -> float | None:
        """Seconds left in every phase, in whatever order they run (the dense evaluation runs first)."""
        total = 0.0
        for phase in Phase:
            remaining = self.units.get(phase, 0) - self.done.get(phase, 0)
            if remaining <= 0:
                continue
            unit = self._unit_seconds(phase)
            if unit is None:
                return None
            total += remaining * unit
        return total
