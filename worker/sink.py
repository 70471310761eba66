"""The worker's sink: a job's outputs go to object storage, each object's sha256 into the database."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.db.session import session_scope
from core.jobs import crud
from core.jobs.states import CheckpointStatus
from core.storage import checkpoint_prefix, report_key, trajectory_key
from worker.context import JobContext

logger = logging.getLogger(__name__)


class StorageSink:
    """Implements ``core.pipeline.sink.Sink`` for a job of the service."""

    def __init__(self, context: JobContext) -> None:
        self.context = context

    def _record(
        self, kind: str, key: str, name: str, sha256: str, size: int, checkpoint_id: str | None = None
    ) -> None:
        with session_scope(self.context.settings) as session:
            crud.record_artifact(
                session=session,
                job_id=self.context.job_id,
                kind=kind,
                key=key,
                name=name,
                sha256=sha256,
                size_bytes=size,
                checkpoint_id=checkpoint_id,
            )

    def save_trajectory(self, trajectory: Any) -> None:
        key = trajectory_key(self.context.tenant_id, self.context.job_id)
        stored = self.context.storage.put_bytes(
            key, trajectory.to_json().encode(), content_type="application/json"
        )
        self._record("trajectory", key, "trajectory.json", stored.sha256, stored.size)

    def save_checkpoint(self, folder: Path, *, sparsity: float, layout: str, is_target: bool) -> None:
        """Upload a checkpoint's files (multipart when large) and mark it ready; a half upload is rewritten."""
        context = self.context
        with session_scope(context.settings) as session:
            checkpoint, _ = crud.ensure_checkpoint(
                session=session, job_id=context.job_id, sparsity=sparsity, layout=layout, is_target=is_target
            )
            checkpoint.is_target = checkpoint.is_target or is_target
            crud.set_checkpoint_status(
                session=session, checkpoint=checkpoint, status=CheckpointStatus.materializing
            )
            checkpoint_id, label = checkpoint.id, checkpoint.label
        prefix = checkpoint_prefix(context.tenant_id, context.job_id, label)
        uploaded = []
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = path.relative_to(folder).as_posix()
            uploaded.append((name, context.storage.put_file(f"{prefix}/{name}", path)))
        for name, stored in uploaded:
            self._record("checkpoint_file", stored.key, name, stored.sha256, stored.size, checkpoint_id)
        with session_scope(context.settings) as session:
            ready = crud.get_checkpoint(session=session, job_id=context.job_id, sparsity=sparsity)
            assert ready is not None
            ready.total_bytes = sum(stored.size for _, stored in uploaded)
            crud.set_checkpoint_status(session=session, checkpoint=ready, status=CheckpointStatus.ready)
        logger.info("checkpoint %s of %s ready (%d files)", label, context.job_id, len(uploaded))

    def save_report(self, report: dict[str, Any], files: dict[str, bytes]) -> None:
        context = self.context
        for name, data in files.items():
            key = report_key(context.tenant_id, context.job_id, f"report/{name}")
            stored = context.storage.put_bytes(key, data)
            self._record("plot", key, name, stored.sha256, stored.size)
        key = report_key(context.tenant_id, context.job_id)
        stored = context.storage.put_bytes(
            key, json.dumps(report, indent=1).encode(), content_type="application/json"
        )
        self._record("report", key, "report.json", stored.sha256, stored.size)


def load_trajectory(context: JobContext) -> Any | None:
    """The job's stored trajectory (to resume, or to materialise from), or None before its first step."""
    from worker import engine_runner

    key = trajectory_key(context.tenant_id, context.job_id)
    if not context.storage.exists(key):
        return None
    return engine_runner.trajectory_from_json(context.storage.get_bytes(key).decode("utf-8"))


def checkpoint_is_ready(context: JobContext, sparsity: float) -> bool:
    with session_scope(context.settings) as session:
        checkpoint = crud.get_checkpoint(session=session, job_id=context.job_id, sparsity=sparsity)
        return checkpoint is not None and checkpoint.status == CheckpointStatus.ready.value


def fail_checkpoint(context: JobContext, sparsity: float, code: str, message: str) -> None:
    with session_scope(context.settings) as session:
        checkpoint = crud.get_checkpoint(session=session, job_id=context.job_id, sparsity=sparsity)
        if checkpoint is not None:
            crud.set_checkpoint_status(
                session=session,
                checkpoint=checkpoint,
                status=CheckpointStatus.failed,
                error_code=code,
                error_message=message,
            )
