"""Job and checkpoint states, and which transitions between them are legal.

The table is the single place that decides whether, say, a cancelled job may still be marked succeeded by a
late worker (it may not): both the API and the workers go through :func:`check_transition`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from core.pruning_spec import sparsity_label


class JobStatus(str, Enum):
    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    # queued -> failed: the job could not be enqueued, or a user error was found before it ran.
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled, JobStatus.failed}),
    # running -> queued: released after a transient failure, or re-queued by the reaper after a crash.
    JobStatus.running: frozenset(
        {JobStatus.queued, JobStatus.cancelling, JobStatus.succeeded, JobStatus.failed, JobStatus.running}
    ),
    # cancelling -> succeeded/failed: the last step finished before the cancel was seen.
    JobStatus.cancelling: frozenset({JobStatus.cancelled, JobStatus.succeeded, JobStatus.failed}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}


class InvalidTransition(Exception):
    """A state change the lifecycle forbids (for instance cancelling a finished job)."""

    def __init__(self, current: JobStatus, target: JobStatus) -> None:
        super().__init__(f"a {current.value} job cannot become {target.value}")
        self.current = current
        self.target = target


def check_transition(current: JobStatus, target: JobStatus) -> None:
    if target not in ALLOWED_TRANSITIONS[current]:
        raise InvalidTransition(current, target)


class CheckpointStatus(str, Enum):
    pending = "pending"  # asked for, waiting for a worker
    materializing = "materializing"
    ready = "ready"
    failed = "failed"


class VerificationStatus(str, Enum):
    """A re-measurement of the point ``/select`` chooses (``verify=true``)."""

    pending = "pending"  # asked for, waiting for a worker
    measuring = "measuring"
    ready = "ready"  # a point met the bounds when re-measured
    failed = "failed"  # none did, or the measurement itself failed


class Phase(str, Enum):
    """What a job is doing now; its progress and ETA cover every phase, not only the pruning steps."""

    queued = "queued"
    loading = "loading"  # the model and the calibration data
    pruning = "pruning"
    building_checkpoints = (
        "building_checkpoints"  # materialising (and refitting) each target, then uploading it
    )
    evaluating = "evaluating"
    uploading = "uploading"  # the report and its plots
    done = "done"


class EventKind(str, Enum):
    state = "state"  # a status change
    phase = "phase"  # a new phase began
    step = "step"  # one pruning step's metrics
    checkpoint = "checkpoint"  # a checkpoint became ready or failed
    retry = "retry"  # a transient failure, retried
    info = "info"


GGUF_TYPES = ("f32", "f16", "q8_0")
LAYOUTS = ("nonuniform", "uniform")


@dataclass(frozen=True)
class CheckpointVariant:
    """What a checkpoint download is besides its sparsity: the job's own layout as a folder (the default), the
    other layout, and/or one GGUF file of a given weight type. Its name ends the row's label, so each variant is
    its own row, storage prefix and materialisation (``0.4000``, ``0.4000-uniform``, ``0.4000-gguf-f16``)."""

    layout: str | None = None  # only when it differs from the job's layout
    gguf_type: str | None = None

    @property
    def name(self) -> str:
        parts = [self.layout] if self.layout else []
        if self.gguf_type:
            parts += ["gguf", self.gguf_type]
        return "-".join(parts)

    @classmethod
    def parse(cls, name: str) -> CheckpointVariant:
        parts = [part for part in name.split("-") if part]
        layout = parts.pop(0) if parts and parts[0] in LAYOUTS else None
        gguf_type = None
        if parts[:1] == ["gguf"] and len(parts) == 2 and parts[1] in GGUF_TYPES:
            gguf_type, parts = parts[1], []
        if parts:
            raise ValueError(f"unknown checkpoint variant '{name}'")
        return cls(layout=layout, gguf_type=gguf_type)


def checkpoint_label(sparsity: float, variant: str = "") -> str:
    """The row label (and storage folder) of a checkpoint: the sparsity, then the variant's name if any."""
    return f"{sparsity_label(sparsity)}-{variant}" if variant else sparsity_label(sparsity)


def split_label(label: str) -> tuple[float, CheckpointVariant]:
    sparsity, _, variant = label.partition("-")
    return float(sparsity), CheckpointVariant.parse(variant)


__all__ = ["sparsity_label"]  # defined beside the sparsity rules it must agree with
