"""The worker's sink: a job's outputs go to object storage, and the rows pointing at them into the database.

Every object is written under a key holding the writer's token (``<job>/…/<lease or claim>/…``), and the
row that points at it is written only while that token still holds (``core.jobs.fencing``): a worker that
lost the job can upload bytes, never replace what its successor wrote.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.db.session import session_scope
from core.jobs import crud, fencing
from core.jobs.states import CheckpointStatus
from core.storage import job_prefix
from worker.context import JobContext

logger = logging.getLogger(__name__)


class StorageSink:
    """Implements ``core.pipeline.sink.Sink`` for a job of the service."""

    def __init__(self, context: JobContext, *, variant: str = "") -> None:
        self.context = context
        self.prefix = job_prefix(context.tenant_id, context.job_id)
        self.variant = variant  # the checkpoints this sink stores are of this variant (a download's)

    def _point(self, kind: str, name: str, stored: Any, checkpoint_id: str | None = None) -> None:
        with session_scope(self.context.settings) as session:
            fencing.record_artifact(
                session=session,
                fence=self.context.fence,
                kind=kind,
                name=name,
                key=stored.key,
                sha256=stored.sha256,
                size_bytes=stored.size,
                checkpoint_id=checkpoint_id,
            )

    def save_trajectory(self, trajectory: Any) -> None:
        key = f"{self.prefix}/trajectory/{self.context.fence.token}.json"
        stored = self.context.storage.put_bytes(
            key, trajectory.to_json().encode(), content_type="application/json"
        )
        self._point("trajectory", "trajectory.json", stored)

    def save_checkpoint(self, folder: Path, *, sparsity: float, layout: str, is_target: bool) -> None:
        """Upload a checkpoint's files (multipart when large), point its rows at them, mark it ready."""
        context = self.context
        with session_scope(context.settings) as session:
            checkpoint, _ = crud.ensure_checkpoint(
                session=session,
                job_id=context.job_id,
                sparsity=sparsity,
                layout=layout,
                is_target=is_target,
                variant=self.variant,
            )
            checkpoint.is_target = checkpoint.is_target or is_target
            if checkpoint.status != CheckpointStatus.materializing.value:
                fencing.set_checkpoint_status(
                    session=session,
                    fence=context.fence,
                    checkpoint=checkpoint,
                    status=CheckpointStatus.materializing,
                )
            checkpoint_id, label = checkpoint.id, checkpoint.label
        prefix = f"{self.prefix}/checkpoints/{label}/{context.fence.token}"
        uploaded = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            uploaded.append((name, context.storage.put_file(f"{prefix}/{name}", path)))
        with session_scope(context.settings) as session:
            for name, stored in uploaded:
                fencing.record_artifact(
                    session=session,
                    fence=context.fence,
                    kind="checkpoint_file",
                    name=name,
                    key=stored.key,
                    sha256=stored.sha256,
                    size_bytes=stored.size,
                    checkpoint_id=checkpoint_id,
                )
            ready = crud.get_checkpoint(
                session=session, job_id=context.job_id, sparsity=sparsity, variant=self.variant
            )
            assert ready is not None
            ready.total_bytes = sum(stored.size for _, stored in uploaded)
            fencing.set_checkpoint_status(
                session=session, fence=context.fence, checkpoint=ready, status=CheckpointStatus.ready
            )
        logger.info("checkpoint %s of %s ready (%d files)", label, context.job_id, len(uploaded))

    def has_checkpoint(self, sparsity: float) -> bool:
        return checkpoint_is_ready(self.context, sparsity, self.variant)

    def save_report(self, report: dict[str, Any], files: dict[str, bytes]) -> None:
        context = self.context
        prefix = f"{self.prefix}/report/{context.fence.token}"
        for name, data in files.items():
            self._point("plot", name, context.storage.put_bytes(f"{prefix}/{name}", data))
        encoded = json.dumps(report, indent=1).encode()
        self._point("report", "report.json", context.storage.put_bytes(f"{prefix}/report.json", encoded))


def load_trajectory(context: JobContext) -> Any | None:
    """The job's current trajectory (to resume, or to materialise from), or None before its first step."""
    from worker import engine_runner

    with session_scope(context.settings) as session:
        key = fencing.artifact_key(
            session=session, job_id=context.job_id, kind="trajectory", name="trajectory.json"
        )
    if key is None:
        return None
    return engine_runner.trajectory_from_json(context.storage.get_bytes(key).decode("utf-8"))


def checkpoint_is_ready(context: JobContext, sparsity: float, variant: str = "") -> bool:
    with session_scope(context.settings) as session:
        checkpoint = crud.get_checkpoint(
            session=session, job_id=context.job_id, sparsity=sparsity, variant=variant
        )
        return checkpoint is not None and checkpoint.status == CheckpointStatus.ready.value


def fail_checkpoint(
    context: JobContext, sparsity: float, code: str, message: str, *, variant: str = ""
) -> None:
    """Mark the checkpoint failed, if this work still holds it (a successor's outcome wins otherwise)."""
    with session_scope(context.settings) as session:
        checkpoint = crud.get_checkpoint(
            session=session, job_id=context.job_id, sparsity=sparsity, variant=variant
        )
        if checkpoint is None:
            return
        try:
            fencing.set_checkpoint_status(
                session=session,
                fence=context.fence,
                checkpoint=checkpoint,
                status=CheckpointStatus.failed,
                error_code=code,
                error_message=message,
            )
        except crud.LeaseLost:
            logger.info("checkpoint %s of %s belongs to another worker now", checkpoint.label, context.job_id)
