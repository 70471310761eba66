"""Celery tasks: run a job, materialise a checkpoint on demand, re-queue jobs of dead workers."""

from __future__ import annotations

import logging
import os
import socket

from celery.signals import worker_init, worker_process_init

from core.db.models import Job
from core.db.session import dispose_engines, session_scope
from core.errors import UserInputError
from core.jobs import crud
from core.jobs.states import JobStatus
from core.schemas.jobs import JobSpec
from core.settings import get_settings
from core.storage import get_storage
from worker import engine_runner
from worker.celery_app import MATERIALIZE_TASK, REAP_TASK, RUN_JOB_TASK, app
from worker.context import JobContext
from worker.failures import classify
from worker.inputs import JobInputs
from worker.job_runner import JobRun, TransientFailure
from worker.sink import StorageSink, checkpoint_is_ready, fail_checkpoint, load_trajectory

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
def run_job(self, job_id: str) -> str:  # type: ignore[no-untyped-def]
    settings = get_settings()
    try:
        return JobRun(settings, job_id, _worker_id(self.request.id)).execute().status
    except TransientFailure as failure:
        if self.request.retries >= settings.max_retries:
            with session_scope(settings) as session:
                job = session.get(Job, job_id)
                if job is not None and job.status == JobStatus.queued.value:
                    crud.fail_queued_job(
                        session=session,
                        job=job,
                        code="retries_exhausted",
                        message=f"gave up after {self.request.retries + 1} attempts: {failure}",
                    )
            return JobStatus.failed.value
        raise self.retry(countdown=_backoff(self.request.retries), exc=failure) from failure


@app.task(
    name=MATERIALIZE_TASK,
    bind=True,
    max_retries=None,
    soft_time_limit=get_settings().materialize_time_limit_s,
    time_limit=get_settings().materialize_time_limit_s + 60,
)
def materialize_checkpoint(self, job_id: str, label: str) -> str:  # type: ignore[no-untyped-def]
    """Materialise a sparsity the trajectory reached but that was not a target (asked for by a download)."""
    settings = get_settings()
    sparsity = float(label)
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is None:
            return "missing"
        context = JobContext(settings, get_storage(settings), job.tenant_id, job_id)
        spec = JobSpec.model_validate(job.spec)
    try:
        if checkpoint_is_ready(context, sparsity):
            return "ready"
        trajectory = load_trajectory(context)
        if trajectory is None:
            raise UserInputError(
                "this job has no trajectory yet", field="sparsity", code="sparsity_not_reached"
            )
        sink = StorageSink(context)
        engine_runner.materialize_on_demand(JobInputs(context, spec), sink, trajectory, sparsity, spec.layout)
        return "ready"
    except Exception as error:
        failure = classify(error)
        if failure.action == "retry" and self.request.retries < settings.max_retries:
            raise self.retry(countdown=_backoff(self.request.retries), exc=error) from error
        if failure.code == "internal_error":
            logger.error("materialising %s of %s failed", label, job_id, exc_info=error)
        code = "retries_exhausted" if failure.action == "retry" else failure.code
        fail_checkpoint(context, sparsity, code, failure.message)
        return "failed"
    finally:
        engine_runner.release_memory()


@app.task(name=REAP_TASK)
def reap_stale_jobs() -> list[str]:
    """Re-queue jobs whose worker stopped heart-beating (killed, OOM, machine lost)."""
    settings = get_settings()
    with session_scope(settings) as session:
        job_ids = crud.reap_stale_jobs(session=session, stale_after_s=settings.stale_after_s)
    for job_id in job_ids:
        logger.warning("job %s lost its worker; re-queued", job_id)
        app.send_task(RUN_JOB_TASK, args=[job_id], queue=settings.task_queue)
    return job_ids
