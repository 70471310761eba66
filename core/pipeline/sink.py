"""Where a run's outputs go: a local folder (``gisp prune``) or object storage (the worker's sink).

The pipeline writes through this small interface only, so the command line and the service produce the same
files from the same code; the worker's implementation adds what the service needs (sha256 records in the
database, fencing by the job's lease).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Protocol

from core.engine.trajectory import Trajectory


def checkpoint_dirname(sparsity: float) -> str:
    return f"sparsity-{sparsity:g}"


class Sink(Protocol):
    def save_trajectory(self, trajectory: Trajectory) -> None:
        """Called after every step and at the end: a resumed run starts from the last one saved."""
        ...

    def save_checkpoint(self, folder: Path, *, sparsity: float, layout: str, is_target: bool) -> None:
        """Store a materialised checkpoint folder (the caller deletes it afterwards)."""
        ...

    def has_checkpoint(self, sparsity: float) -> bool:
        """Whether a checkpoint at ``sparsity`` is stored already (by an earlier attempt of the run)."""
        ...

    def save_report(self, report: dict[str, Any], files: dict[str, bytes]) -> None: ...


class FolderSink:
    """OUT/trajectory.json, OUT/sparsity-<s>/ per checkpoint, OUT/report.json and OUT/report/<plots>."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.checkpoints: list[Path] = []

    def save_trajectory(self, trajectory: Trajectory) -> None:
        partial = self.out / "trajectory.json.partial"
        partial.write_text(trajectory.to_json())
        partial.replace(self.out / "trajectory.json")  # a crash never leaves half a trajectory

    def save_checkpoint(self, folder: Path, *, sparsity: float, layout: str, is_target: bool) -> None:
        target = self.out / checkpoint_dirname(sparsity)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(folder, target)
        self.checkpoints.append(target)

    def has_checkpoint(self, sparsity: float) -> bool:
        return False  # a command-line run writes every checkpoint afresh

    def save_report(self, report: dict[str, Any], files: dict[str, bytes]) -> None:
        (self.out / "report.json").write_text(json.dumps(report, indent=1))
        if files:
            (self.out / "report").mkdir(exist_ok=True)
            for name, data in files.items():
                (self.out / "report" / name).write_bytes(data)
