"""Writing a job's outputs to object storage and recording each object's sha256 in the database."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from core.db.session import session_scope
from core.jobs import crud
from core.jobs.states import CheckpointStatus
from core.pruning_spec import Layout
from core.settings import Settings
from core.storage import Storage, checkpoint_prefix, trajectory_key
from worker import engine_runner

logger = logging.getLogger(__name__)


def save_trajectory(
    *, settings: Settings, storage: Storage, tenant_id: str, job_id: str, trajectory: Any
) -> None:
    key = trajectory_key(tenant_id, job_id)
    stored = storage.put_bytes(key, trajectory.to_json().encode("utf-8"), content_type="application/json")
    with session_scope(settings) as session:
        crud.record_artifact(
            session=session,
            job_id=job_id,
            kind="trajectory",
            key=key,
            name="trajectory.json",
            sha256=stored.sha256,
            size_bytes=stored.size,
        )


def load_trajectory(*, storage: Storage, tenant_id: str, job_id: str) -> Any | None:
    key = trajectory_key(tenant_id, job_id)
    if not storage.exists(key):
        return None
    return engine_runner.trajectory_from_json(storage.get_bytes(key).decode("utf-8"))


def materialize_checkpoint(
    *,
    settings: Settings,
    storage: Storage,
    tenant_id: str,
    job_id: str,
    loaded: Any,
    trajectory: Any,
    sparsity: float,
    layout: Layout,
    is_target: bool,
    calibration: list[Any],
) -> None:
    """Materialise one sparsity, upload its files (multipart when large) and mark the checkpoint ready.

    ``calibration``: the job's items, which the checkpoint's least-squares refit reads.

    Idempotent: a checkpoint already ready is left alone, and a half-uploaded one is simply rewritten.
    """
    with session_scope(settings) as session:
        checkpoint, _ = crud.ensure_checkpoint(
            session=session, job_id=job_id, sparsity=sparsity, layout=layout.value, is_target=is_target
        )
        if checkpoint.status == CheckpointStatus.ready.value:
            return
        checkpoint.is_target = checkpoint.is_target or is_target
        crud.set_checkpoint_status(
            session=session, checkpoint=checkpoint, status=CheckpointStatus.materializing
        )
        checkpoint_id, label = checkpoint.id, checkpoint.label
    prefix = checkpoint_prefix(tenant_id, job_id, label)
    uploaded = []
    with tempfile.TemporaryDirectory(prefix="gisp-ckpt-") as tmp:
        out = engine_runner.materialize(
            loaded, trajectory, sparsity, Path(tmp) / "checkpoint", layout, calibration
        )
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            name = path.relative_to(out).as_posix()
            uploaded.append((name, storage.put_file(f"{prefix}/{name}", path)))
    with session_scope(settings) as session:
        for name, stored in uploaded:
            crud.record_artifact(
                session=session,
                job_id=job_id,
                kind="checkpoint_file",
                key=stored.key,
                name=name,
                sha256=stored.sha256,
                size_bytes=stored.size,
                checkpoint_id=checkpoint_id,
            )
        checkpoint = crud.get_checkpoint(session=session, job_id=job_id, sparsity=sparsity)
        assert checkpoint is not None
        checkpoint.total_bytes = sum(stored.size for _, stored in uploaded)
        crud.set_checkpoint_status(session=session, checkpoint=checkpoint, status=CheckpointStatus.ready)
    logger.info("checkpoint %s of %s ready (%d files)", label, job_id, len(uploaded))


def fail_checkpoint(*, settings: Settings, job_id: str, sparsity: float, code: str, message: str) -> None:
    with session_scope(settings) as session:
        checkpoint = crud.get_checkpoint(session=session, job_id=job_id, sparsity=sparsity)
        if checkpoint is not None:
            crud.set_checkpoint_status(
                session=session,
                checkpoint=checkpoint,
                status=CheckpointStatus.failed,
                error_code=code,
                error_message=message,
            )
