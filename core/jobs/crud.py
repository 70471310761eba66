"""Database operations on jobs, their events and checkpoints.

Worker-side writes are conditional on the job's ``lease`` (a token that changes on every claim): a worker
that was presumed dead and replaced can never overwrite the state its successor writes.
"""

from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

if TYPE_CHECKING:
    from sqlalchemy.engine import CursorResult

from core.db.base import new_id, utcnow
from core.db.models import Checkpoint, Job, JobEvent, Tenant
from core.jobs.states import (
    CheckpointStatus,
    EventKind,
    InvalidTransition,
    JobStatus,
    Phase,
    check_transition,
    checkpoint_label,
)
from core.schemas.jobs import JobSpec

ACTIVE_STATES = (JobStatus.running.value, JobStatus.cancelling.value)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used with a different request body."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"Idempotency-Key already used for job {job_id} with a different request body")
        self.job_id = job_id


class LeaseLost(Exception):
    """The job was re-queued or finished by someone else: this worker must stop touching it."""


# --- submission and queries ---


def create_job(
    *, session: Session, tenant_id: str, job_in: JobSpec, idempotency_key: str | None
) -> tuple[Job, bool]:
    """Insert a queued job; with an Idempotency-Key, return the earlier job instead (created=False).

    Concurrent submissions with one key race on the unique constraint; the loser reads the winner's job.
    """
    request_hash = job_in.fingerprint()
    if idempotency_key is not None:
        existing = _job_by_key(session=session, tenant_id=tenant_id, idempotency_key=idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash), False
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        status=JobStatus.queued.value,
        spec=job_in.model_dump(mode="json"),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        progress_step=0,
        attempt=0,
        phase=Phase.queued.value,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        existing = _job_by_key(session=session, tenant_id=tenant_id, idempotency_key=idempotency_key or "")
        if existing is None:
            raise
        return _replay(existing, request_hash), False
    add_event(session=session, job_id=job.id, kind=EventKind.state, data={"status": JobStatus.queued.value})
    return job, True


def _replay(job: Job, request_hash: str) -> Job:
    if job.request_hash != request_hash:
        raise IdempotencyConflict(job.id)
    return job


def _job_by_key(*, session: Session, tenant_id: str, idempotency_key: str) -> Job | None:
    return session.scalar(
        select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == idempotency_key)
    )


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job | None:
    """The tenant's job with its checkpoints, in one query (this is what status polls run)."""
    query = (
        select(Job).where(Job.id == job_id, Job.tenant_id == tenant_id).options(joinedload(Job.checkpoints))
    )
    return session.scalars(query).unique().one_or_none()


def encode_cursor(created_at: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{job_id}".encode()).decode()


_CURSOR_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises ValueError on anything that is not a cursor this server produced.

    Both halves are checked by shape here, since they reach SQL as bind values: a naive timestamp cannot be
    compared with a stored one, and PostgreSQL refuses a NUL inside text.
    """
    raw = base64.urlsafe_b64decode(cursor.encode()).decode()
    stamp, row_id = raw.split("|", 1)
    created_at = datetime.fromisoformat(stamp)
    if created_at.tzinfo is None or not _CURSOR_ID_RE.fullmatch(row_id):
        raise ValueError("not a cursor this server produced")
    return created_at, row_id


def list_jobs(
    *, session: Session, tenant_id: str, status: JobStatus | None, cursor: str | None, limit: int
) -> tuple[list[Job], str | None]:
    """Newest first; the cursor is the (created_at, id) of the last job of the previous page."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status.value)
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    jobs = list(session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)))
    next_cursor = encode_cursor(jobs[limit - 1].created_at, jobs[limit - 1].id) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


# --- events ---


def add_event(*, session: Session, job_id: str, kind: EventKind, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind.value, data=data))


def list_events(
    *, session: Session, job_id: str, after: int | None, limit: int
) -> tuple[list[JobEvent], str | None]:
    query = select(JobEvent).where(JobEvent.job_id == job_id)
    if after is not None:
        query = query.where(JobEvent.id > after)
    events = list(session.scalars(query.order_by(JobEvent.id).limit(limit + 1)))
    next_cursor = str(events[limit - 1].id) if len(events) > limit else None
    return events[:limit], next_cursor


# --- state changes ---


def transition(session: Session, job: Job, target: JobStatus, **data: Any) -> None:
    """Move a loaded job to ``target`` (checked against the lifecycle) and log a state event."""
    check_transition(JobStatus(job.status), target)
    job.status = target.value
    if target is JobStatus.queued:
        job.phase, job.phase_done, job.phase_total = Phase.queued.value, None, None
    elif target is JobStatus.succeeded:
        job.phase = Phase.done.value
    if target.is_terminal:
        job.finished_at = utcnow()
    add_event(session=session, job_id=job.id, kind=EventKind.state, data={"status": target.value, **data})


def request_cancel(*, session: Session, job: Job) -> Job:
    """Queued jobs are cancelled at once, running ones at their next step boundary, finished ones never."""
    status = JobStatus(job.status)
    if status is JobStatus.queued:
        transition(session, job, JobStatus.cancelled, reason="cancelled before it started")
    elif status is JobStatus.running:
        transition(session, job, JobStatus.cancelling)
    session.flush()
    return job


def claim_job(
    *, session: Session, job_id: str, worker_id: str, stale_after_s: float, reclaim: str | None = None
) -> str | None:
    """Take a queued job, or a running one whose worker went silent; returns the new lease or None.

    One conditional UPDATE, so of two deliveries of the same job only one wins. Taking over a silent worker's
    job counts a crash (as the reaper's re-queue does); claiming a queued job does not. ``reclaim``: the
    lease of this task's previous try, which could not release the job (the database was down): the retry
    takes its own job back at once, without waiting for it to look dead.
    """
    lease = uuid.uuid4().hex
    now = utcnow()
    stale_before = now - timedelta(seconds=stale_after_s)
    taken_over = and_(Job.status == JobStatus.running.value, Job.heartbeat_at < stale_before)
    own = and_(Job.status == JobStatus.running.value, Job.lease == reclaim) if reclaim else taken_over
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, or_(Job.status == JobStatus.queued.value, taken_over, own))
        .values(
            status=JobStatus.running.value,
            lease=lease,
            worker_id=worker_id,
            heartbeat_at=now,
            attempt=Job.attempt + 1,
            crashes=Job.crashes + case((taken_over & (Job.lease != (reclaim or "")), 1), else_=0),
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if cast("CursorResult[Any]", result).rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    if job.started_at is None:
        job.started_at = now
    add_event(
        session=session,
        job_id=job_id,
        kind=EventKind.state,
        data={"status": JobStatus.running.value, "attempt": job.attempt, "worker": worker_id},
    )
    session.flush()
    return lease


def _owned(session: Session, job_id: str, lease: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if (
        job is None
        or job.lease != lease
        or JobStatus(job.status) not in (JobStatus.running, JobStatus.cancelling)
    ):
        raise LeaseLost(job_id)
    return job


def heartbeat(*, session: Session, job_id: str, lease: str) -> bool:
    """Refresh liveness; False when the lease is gone (the worker should stop)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease == lease, Job.status.in_(ACTIVE_STATES))
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    return cast("CursorResult[Any]", result).rowcount == 1


@dataclass(frozen=True)
class StepUpdate:
    index: int
    total_steps: int
    sparsity: float
    loss: float | None
    seconds: float
    reached_sparsities: list[float]


def record_step(*, session: Session, job_id: str, lease: str, step: StepUpdate) -> JobStatus:
    """Write a step's progress and event; returns the job's status so the worker sees a cancel request."""
    job = _owned(session, job_id, lease)
    job.progress_step = step.index
    job.progress_total = step.total_steps
    job.current_sparsity = step.sparsity
    job.calibration_loss = step.loss
    job.reached_sparsities = step.reached_sparsities
    job.heartbeat_at = utcnow()
    job.transient_since = None  # progress: an outage, if there was one, is over
    add_event(
        session=session,
        job_id=job_id,
        kind=EventKind.step,
        data={
            "step": step.index,
            "total_steps": step.total_steps,
            "sparsity": step.sparsity,
            "loss": step.loss,
            "seconds": step.seconds,
            "attempt": job.attempt,
        },
    )
    session.flush()
    return JobStatus(job.status)


def record_phase(
    *,
    session: Session,
    job_id: str,
    lease: str,
    phase: Phase,
    done: int,
    total: int,
    eta_seconds: float | None,
) -> None:
    """The job's phase, its progress within it and the ETA over every phase; an event when a phase begins."""
    job = _owned(session, job_id, lease)
    if job.phase != phase.value:
        add_event(
            session=session, job_id=job_id, kind=EventKind.phase, data={"phase": phase.value, "total": total}
        )
    job.phase, job.phase_done, job.phase_total, job.eta_seconds = phase.value, done, total, eta_seconds
    job.heartbeat_at = utcnow()
    job.transient_since = None
    session.flush()


def current_status(*, session: Session, job_id: str, lease: str) -> JobStatus:
    job = session.get(Job, job_id, populate_existing=True)
    if job is None or job.lease != lease:
        raise LeaseLost(job_id)
    return JobStatus(job.status)


def finish_job(
    *,
    session: Session,
    job_id: str,
    lease: str,
    status: JobStatus,
    error_code: str | None = None,
    error_message: str | None = None,
    error_field: str | None = None,
) -> Job:
    job = _owned(session, job_id, lease)
    job.error_code, job.error_message, job.error_field = error_code, error_message, error_field
    job.eta_seconds = 0.0 if status is JobStatus.succeeded else None
    data: dict[str, Any] = {}
    if error_code:
        data["error"] = {"code": error_code, "message": error_message, "field": error_field}
    transition(session, job, status, **data)
    job.lease = None
    session.flush()
    return job


def release_job(*, session: Session, job_id: str, lease: str, reason: str) -> None:
    """Give a job back to the queue after a transient failure (the task's retry will claim it again).

    Counted as a transient retry, never as a crash; ``transient_since`` keeps the start of the outage so
    the retries stop at GISP_TRANSIENT_DEADLINE_S and the job fails with its true cause.
    """
    job = _owned(session, job_id, lease)
    if JobStatus(job.status) is JobStatus.cancelling:
        transition(session, job, JobStatus.cancelled, reason=reason)
    else:
        transition(session, job, JobStatus.queued, reason=reason)
    job.transient_retries += 1
    job.transient_since = job.transient_since or utcnow()
    job.enqueued_at = utcnow()  # the task's own retry is the live message
    job.lease = None
    job.heartbeat_at = None
    session.flush()


def fail_queued_job(*, session: Session, job: Job, code: str, message: str, field: str | None = None) -> None:
    job.error_code, job.error_message, job.error_field = code, message, field
    transition(session, job, JobStatus.failed, error={"code": code, "message": message, "field": field})
    session.flush()


def reap_stale_jobs(*, session: Session, stale_after_s: float) -> list[str]:
    """Re-queue running jobs whose worker stopped heart-beating (a crash); returns their ids, to re-send.

    A stale ``cancelling`` job is simply cancelled: nobody is left to stop.
    """
    stale_before = utcnow() - timedelta(seconds=stale_after_s)
    stale = list(
        session.scalars(
            select(Job)
            .where(Job.status.in_(ACTIVE_STATES), Job.heartbeat_at < stale_before)
            .with_for_update(skip_locked=True)
        )
    )
    requeued = []
    for job in stale:
        if JobStatus(job.status) is JobStatus.cancelling:
            transition(session, job, JobStatus.cancelled, reason="worker lost while cancelling")
        else:
            transition(session, job, JobStatus.queued, reason="worker lost; resuming from the last step")
            job.crashes += 1
            job.enqueued_at = None  # its message went with the worker
            requeued.append(job.id)
        job.lease = None
    session.flush()
    return requeued


# --- the outbox: a queued job or pending checkpoint and its broker message agree ---


def mark_job_enqueued(*, session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))


def mark_checkpoint_enqueued(*, session: Session, checkpoint_id: str) -> None:
    session.execute(update(Checkpoint).where(Checkpoint.id == checkpoint_id).values(enqueued_at=utcnow()))


def jobs_to_send(*, session: Session, older_than_s: float) -> list[str]:
    """Queued jobs never handed to the broker, or handed over so long ago that the message may be lost.

    Sending one again is safe: a claim is a conditional update, so a duplicate message finds nothing to do.
    """
    before = utcnow() - timedelta(seconds=older_than_s)
    query = select(Job.id).where(
        Job.status == JobStatus.queued.value, or_(Job.enqueued_at.is_(None), Job.enqueued_at < before)
    )
    return list(session.scalars(query.order_by(Job.created_at).limit(500)))


def checkpoints_to_send(
    *, session: Session, older_than_s: float, stale_claim_s: float
) -> list[tuple[str, str, str]]:
    """(job id, label, id) of on-demand checkpoints whose message may be lost or whose worker died."""
    now = utcnow()
    waiting = and_(
        Checkpoint.status == CheckpointStatus.pending.value,
        or_(Checkpoint.enqueued_at.is_(None), Checkpoint.enqueued_at < now - timedelta(seconds=older_than_s)),
    )
    abandoned = and_(
        Checkpoint.status == CheckpointStatus.materializing.value,
        Checkpoint.claim.is_not(None),
        Checkpoint.claimed_at < now - timedelta(seconds=stale_claim_s),
    )
    query = select(Checkpoint.job_id, Checkpoint.label, Checkpoint.id).where(
        Checkpoint.is_target.is_(False), or_(waiting, abandoned)
    )
    return [
        (job_id, label, checkpoint_id) for job_id, label, checkpoint_id in session.execute(query.limit(500))
    ]


# --- checkpoints and artifacts ---


def get_checkpoint(*, session: Session, job_id: str, sparsity: float, variant: str = "") -> Checkpoint | None:
    """The row of the checkpoint at ``sparsity`` in ``variant`` (``CheckpointVariant.name``; "" the job's own)."""
    label = checkpoint_label(sparsity, variant)
    return session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.label == label))


def ensure_checkpoint(
    *, session: Session, job_id: str, sparsity: float, layout: str, is_target: bool, variant: str = ""
) -> tuple[Checkpoint, bool]:
    """The checkpoint row for this sparsity and variant, created as pending if new (created=True)."""
    existing = get_checkpoint(session=session, job_id=job_id, sparsity=sparsity, variant=variant)
    if existing is not None:
        return existing, False
    checkpoint = Checkpoint(
        id=new_id("ckpt"),
        job_id=job_id,
        sparsity=round(float(sparsity), 4),
        label=checkpoint_label(sparsity, variant),
        variant=variant,
        is_target=is_target,
        layout=layout,
        status=CheckpointStatus.pending.value,
    )
    try:
        with session.begin_nested():
            session.add(checkpoint)
            session.flush()
    except IntegrityError:
        existing = get_checkpoint(session=session, job_id=job_id, sparsity=sparsity, variant=variant)
        if existing is None:
            raise
        return existing, False
    return checkpoint, True


@dataclass(frozen=True)
class OnDemandUse:
    """What a tenant's on-demand checkpoints cost now: the quotas are checked against these counts."""

    of_job: int  # the job's on-demand checkpoints that exist or are being built (failed ones hold nothing)
    building: int  # the tenant's on-demand checkpoints pending or materialising, over all its jobs


def on_demand_use(*, session: Session, tenant_id: str, job_id: str) -> OnDemandUse:
    """Counts for the materialisation quotas, read under a lock on the tenant's row.

    The lock serialises a tenant's concurrent requests until the caller's transaction ends, so two of them
    cannot both see room for one more checkpoint (SQLite, single-writer, needs no lock).
    """
    session.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())
    on_demand = and_(Checkpoint.is_target.is_(False), Checkpoint.status != CheckpointStatus.failed.value)
    of_job = session.scalar(
        select(func.count()).select_from(Checkpoint).where(Checkpoint.job_id == job_id, on_demand)
    )
    building = session.scalar(
        select(func.count())
        .select_from(Checkpoint)
        .join(Job, Job.id == Checkpoint.job_id)
        .where(
            Job.tenant_id == tenant_id,
            Checkpoint.is_target.is_(False),
            Checkpoint.status.in_((CheckpointStatus.pending.value, CheckpointStatus.materializing.value)),
        )
    )
    return OnDemandUse(of_job=of_job or 0, building=building or 0)


__all__ = [
    "IdempotencyConflict",
    "InvalidTransition",
    "LeaseLost",
    "StepUpdate",
]
