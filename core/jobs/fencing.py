"""Writes a worker makes for a job, each fenced by the token it works under.

A worker runs a job under the job's ``lease`` and materialises an on-demand checkpoint under the checkpoint's
``claim``; both change when another worker takes the work over (the first was presumed dead). Objects go to
storage under a key that contains the writer's token, so two writers never share a key; the database row
that *points* at an object is written in a transaction that first locks the job (or checkpoint) row and
checks the token. A worker that lost its token can still upload bytes, but nothing ever refers to them:
readers find every object through these rows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.db.base import utcnow
from core.db.models import Artifact, Checkpoint, Job, Verification
from core.jobs.crud import LeaseLost, add_event
from core.jobs.states import CheckpointStatus, EventKind, JobStatus

WORKER_STATES = (JobStatus.running.value, JobStatus.cancelling.value)


@dataclass(frozen=True)
class Fence:
    """The token a write must still hold: a job's lease (its run) or a checkpoint's claim (on demand)."""

    job_id: str
    lease: str | None = None
    claim: str | None = None

    @property
    def token(self) -> str:
        token = self.lease or self.claim
        assert token is not None, "a fence holds a lease or a claim"
        return token


def check(session: Session, fence: Fence) -> None:
    """Lock the row the token lives on and check it; LeaseLost if another writer owns the work now."""
    if fence.lease is not None:
        job = session.scalar(select(Job).where(Job.id == fence.job_id).with_for_update())
        if job is None or job.lease != fence.lease or job.status not in WORKER_STATES:
            raise LeaseLost(fence.job_id)
        return
    checkpoint = session.scalar(
        select(Checkpoint)
        .where(Checkpoint.job_id == fence.job_id, Checkpoint.claim == fence.claim)
        .with_for_update()
    )
    if checkpoint is None or checkpoint.status != CheckpointStatus.materializing.value:
        raise LeaseLost(fence.job_id)


def record_artifact(
    *,
    session: Session,
    fence: Fence,
    kind: str,
    name: str,
    key: str,
    sha256: str,
    size_bytes: int,
    checkpoint_id: str | None = None,
) -> Artifact:
    """Point the job's (kind, name[, checkpoint]) artifact at ``key``, if ``fence`` still holds."""
    check(session, fence)
    query = select(Artifact).where(
        Artifact.job_id == fence.job_id, Artifact.kind == kind, Artifact.name == name
    )
    query = query.where(
        Artifact.checkpoint_id.is_(None) if checkpoint_id is None else Artifact.checkpoint_id == checkpoint_id
    )
    artifact = session.scalar(query)
    if artifact is None:
        artifact = Artifact(job_id=fence.job_id, kind=kind, name=name, checkpoint_id=checkpoint_id)
        session.add(artifact)
    artifact.key, artifact.sha256, artifact.size_bytes = key, sha256, size_bytes
    session.flush()
    return artifact


def artifact_key(
    *, session: Session, job_id: str, kind: str, name: str, checkpoint_id: str | None = None
) -> str | None:
    """The key of the object a job's artifact points at now (None before it was first written)."""
    query = select(Artifact.key).where(
        Artifact.job_id == job_id, Artifact.kind == kind, Artifact.name == name
    )
    query = query.where(
        Artifact.checkpoint_id.is_(None) if checkpoint_id is None else Artifact.checkpoint_id == checkpoint_id
    )
    return session.scalar(query.order_by(Artifact.id.desc()).limit(1))


def set_checkpoint_status(
    *,
    session: Session,
    fence: Fence,
    checkpoint: Checkpoint,
    status: CheckpointStatus,
    error_code: str | None = None,
    error_message: str | None = None,
) -> None:
    check(session, fence)
    checkpoint.status = status.value
    checkpoint.error_code, checkpoint.error_message = error_code, error_message
    if status in (CheckpointStatus.ready, CheckpointStatus.failed):
        checkpoint.claim = None
        add_event(
            session=session,
            job_id=checkpoint.job_id,
            kind=EventKind.checkpoint,
            data={"sparsity": checkpoint.sparsity, "status": status.value, "error": error_code},
        )
    session.flush()


def claim_row(
    *,
    session: Session,
    model: type[Checkpoint] | type[Verification],
    row_id: str,
    pending: str,
    busy: str,
    stale_after_s: float,
    reclaim: str | None = None,
) -> str | None:
    """Take a ``pending`` row of a worker-claimed table, or a ``busy`` one whose claim outlived
    ``stale_after_s``; the new claim, or None.

    One conditional UPDATE, so of two deliveries of the same request only one does the work. ``reclaim``:
    this task's previous claim (a retry after an outage takes its own work back).
    """
    claim = uuid.uuid4().hex
    now = utcnow()
    held = model.status == busy
    result = session.execute(
        update(model)
        .where(
            model.id == row_id,
            or_(
                model.status == pending,
                held & (model.claimed_at < now - timedelta(seconds=stale_after_s)),
                held & (model.claim == (reclaim or "")),
            ),
        )
        .values(status=busy, claim=claim, claimed_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return claim if getattr(result, "rowcount", 0) == 1 else None


def claim_checkpoint(
    *, session: Session, checkpoint_id: str, stale_after_s: float, reclaim: str | None = None
) -> str | None:
    """Take a pending checkpoint, or one whose materialisation outlived its time limit (:func:`claim_row`)."""
    return claim_row(
        session=session,
        model=Checkpoint,
        row_id=checkpoint_id,
        pending=CheckpointStatus.pending.value,
        busy=CheckpointStatus.materializing.value,
        stale_after_s=stale_after_s,
        reclaim=reclaim,
    )
