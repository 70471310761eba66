"""Celery tasks: run a job, materialise a checkpoint on demand, re-measure a selection, re-queue jobs of
dead workers."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from celery.signals import worker_init, worker_process_init

from core.db.models import Job
from core.db.session import dispose_engines, session_scope
from core.errors import UserInputError
from core.jobs import crud, fencing
from core.jobs.states import JobStatus, split_label
from core.schemas.jobs import JobSpec
from core.settings import get_settings
from core.storage import get_storage
from worker import engine_runner, outbox, verification
from worker.celery_app import MATERIALIZE_TASK, REAP_TASK, RUN_JOB_TASK, VERIFY_TASK, app
from worker.context import JobContext
from worker.failures import TRANSIENT_ERRORS, classify
from worker.inputs import JobInputs
from worker.job_runner import JobRun, TransientFailure
from worker.sink import StorageSink, fail_checkpoint, load_trajectory

logger = logging.getLogger(__name__)


@worker_init.connect
def _preload_engine(**_: object) -> None:
    # Import torch and the engine once in the parent, before the pool forks: every pool process (and each
    # replacement after a crash) then starts its first job without paying seconds of imports.
    engine_runner.preload()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    # Pooled connections must not be shared between the parent and a forked pool process.
    dispose_engines()


def _backoff(retries: int) -> float:
    settings = get_settings()
    return min(settings.retry_backoff_s * (2**retries), settings.retry_backoff_max_s)


def _worker_id(task_id: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{task_id}"


@app.task(name=RUN_JOB_TASK, bind=True, max_retries=None)
def run_job(self, job_id: str, failing_since: float | None = None, lease: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Run a job; an outage is waited out with backoff until GISP_TRANSIENT_DEADLINE_S, counted from its start.

    ``failing_since`` and ``lease`` ride along the retries: when the outage began (measured here, as the
    database may be what is down) and the lease a try could not give back, which the next try takes again.
    """
    settings = get_settings()
    try:
        return JobRun(settings, job_id, _worker_id(self.request.id), reclaim=lease).execute().status
    except TransientFailure as transient:
        since = failing_since or time.time()
        if time.time() - since > settings.transient_deadline_s and _fail_job(settings, job_id, transient):
            return JobStatus.failed.value
        kwargs = {"job_id": job_id, "failing_since": since, "lease": transient.lease}
        raise self.retry(
            countdown=_backoff(self.request.retries), exc=transient, kwargs=kwargs
        ) from transient


def _fail_job(settings: Any, job_id: str, transient: TransientFailure) -> bool:
    """Fail a job whose outage outlasted the deadline, with its true cause; False if that write fails too."""
    failure = transient.failure
    message = f"unavailable for longer than {settings.transient_deadline_s:.0f} s: {failure.message}"
    try:
        with session_scope(settings) as session:
            job = session.get(Job, job_id)
            if job is not None and job.status == JobStatus.queued.value:
                crud.fail_queued_job(session=session, job=job, code=failure.code, message=message)
            elif job is not None and transient.lease is not None and job.lease == transient.lease:
                crud.finish_job(
                    session=session,
                    job_id=job_id,
                    lease=transient.lease,
                    status=JobStatus.failed,
                    error_code=failure.code,
                    error_message=message,
                )
    except TRANSIENT_ERRORS:
        return False
    return True


@app.task(
    name=MATERIALIZE_TASK,
    bind=True,
    max_retries=None,
    soft_time_limit=get_settings().materialize_time_limit_s,
    time_limit=get_settings().materialize_time_limit_s + 60,
)
def materialize_checkpoint(  # type: ignore[no-untyped-def]
    self, job_id: str, label: str, failing_since: float | None = None, claim: str | None = None
) -> str:
    """Materialise a checkpoint a download asked for: a sparsity the trajectory reached but that was not a target,
    or any reached sparsity in another variant (the other layout, a GGUF file)."""
    settings = get_settings()
    sparsity, variant = split_label(label)
    context: JobContext | None = None
    try:
        claimed = _claim_checkpoint(settings, job_id, sparsity, variant.name, claim)
        if claimed is None:
            return "skipped"
        context, spec = claimed
        trajectory = load_trajectory(context)
        if trajectory is None:
            raise UserInputError(
                "this job has no trajectory yet", field="sparsity", code="sparsity_not_reached"
            )
        sink = StorageSink(context, variant=variant.name)
        layout = variant.layout or spec.layout.value
        engine_runner.materialize_on_demand(
            JobInputs(context, spec), sink, trajectory, sparsity, layout, gguf_type=variant.gguf_type
        )
        return "ready"
    except Exception as error:
        failure = classify(error)
        if failure.action == "stop":
            return "superseded"
        since = failing_since or time.time()
        if failure.action == "retry" and time.time() - since <= settings.transient_deadline_s:
            kwargs = {
                "job_id": job_id,
                "label": label,
                "failing_since": since,
                "claim": context and context.claim,
            }
            raise self.retry(countdown=_backoff(self.request.retries), exc=error, kwargs=kwargs) from error
        if failure.code == "internal_error":
            logger.error("materialising %s of %s failed", label, job_id, exc_info=error)
        if context is not None:
            fail_checkpoint(context, sparsity, failure.code, failure.message, variant=variant.name)
        return "failed"
    finally:
        engine_runner.release_memory()


def _claim_checkpoint(
    settings: Any, job_id: str, sparsity: float, variant: str, reclaim: str | None
) -> tuple[JobContext, JobSpec] | None:
    """The context (holding a fresh claim) and spec of the work, or None if it is done or being done."""
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        checkpoint = crud.get_checkpoint(session=session, job_id=job_id, sparsity=sparsity, variant=variant)
        if job is None or checkpoint is None:
            return None
        claim = fencing.claim_checkpoint(
            session=session,
            checkpoint_id=checkpoint.id,
            stale_after_s=settings.materialize_time_limit_s + 60,
            reclaim=reclaim,
        )
        if claim is None:
            return None
        context = JobContext(settings, get_storage(settings), job.tenant_id, job_id, claim=claim)
        return context, JobSpec.model_validate(job.spec)


@app.task(
    name=VERIFY_TASK,
    bind=True,
    max_retries=None,
    soft_time_limit=get_settings().verify_time_limit_s,
    time_limit=get_settings().verify_time_limit_s + 60,
)
def verify_selection(  # type: ignore[no-untyped-def]
    self, verification_id: str, failing_since: float | None = None, claim: str | None = None
) -> str:
    """Re-measure the point a selection chose, stepping back until the re-measured figures meet the bounds."""
    settings = get_settings()
    work: verification.VerificationWork | None = None
    try:
        work = verification.claim(settings, verification_id, claim)
        if work is None:
            return "skipped"
        return verification.measure(work)
    except Exception as error:
        failure = classify(error)
        if failure.action == "stop":
            return "superseded"
        since = failing_since or time.time()
        if failure.action == "retry" and time.time() - since <= settings.transient_deadline_s:
            kwargs = {
                "verification_id": verification_id,
                "failing_since": since,
                "claim": work and work.claim,
            }
            raise self.retry(countdown=_backoff(self.request.retries), exc=error, kwargs=kwargs) from error
        if failure.code == "internal_error":
            logger.error("verifying %s failed", verification_id, exc_info=error)
        if work is not None:
            verification.fail(work, failure.code, failure.message, failure.field)
        return "failed"
    finally:
        engine_runner.release_memory()


@app.task(name=REAP_TASK)
def reap_stale_jobs() -> dict[str, int]:
    """Re-queue jobs whose worker stopped heart-beating (killed, OOM, machine lost), then send again every
    queued job, pending checkpoint and waiting verification whose message is missing or old
    (``worker.outbox``)."""
    settings = get_settings()
    with session_scope(settings) as session:
        lost = crud.reap_stale_jobs(session=session, stale_after_s=settings.stale_after_s)
    for job_id in lost:
        logger.warning("job %s lost its worker; re-queued", job_id)
    sent = outbox.resend_waiting(settings)
    return {"lost": len(lost), **sent}
