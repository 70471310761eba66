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
from core.schemas.jobs import JobCreate
from core.settings import get_settings
from core.storage import get_storage
from worker import artifacts, calibration, engine_runner
from worker.celery_app import MATERIALIZE_TASK, REAP_TASK, RUN_JOB_TASK, app
from worker.job_runner import TRANSIENT_ERRORS, JobRun, TransientFailure

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
    storage = get_storage(settings)
    sparsity = float(label)
    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        if job is None:
            return "missing"
        tenant_id, spec = job.tenant_id, JobCreate.model_validate(job.spec)
    try:
        trajectory = artifacts.load_trajectory(storage=storage, tenant_id=tenant_id, job_id=job_id)
        if trajectory is None:
            raise UserInputError(
                "this job has no trajectory yet", field="sparsity", code="sparsity_not_reached"
            )
        loaded = engine_runner.load(spec.model, settings)
        items = calibration.job_calibration_items(
            settings=settings, storage=storage, tenant_id=tenant_id, spec=spec
        )
        artifacts.materialize_checkpoint(
            settings=settings,
            storage=storage,
            tenant_id=tenant_id,
            job_id=job_id,
            loaded=loaded,
            trajectory=trajectory,
            sparsity=sparsity,
            layout=spec.layout,
            is_target=False,
            calibration=items,
        )
        return "ready"
    except UserInputError as error:
        artifacts.fail_checkpoint(
            settings=settings, job_id=job_id, sparsity=sparsity, code=error.code, message=error.message
        )
        return "failed"
    except TRANSIENT_ERRORS as error:
        if self.request.retries >= settings.max_retries:
            artifacts.fail_checkpoint(
                settings=settings,
                job_id=job_id,
                sparsity=sparsity,
                code="retries_exhausted",
                message=str(error),
            )
            return "failed"
        raise self.retry(countdown=_backoff(self.request.retries), exc=error) from error
    except Exception as error:
        logger.exception("materialising %s of %s failed", label, job_id)
        artifacts.fail_checkpoint(
            settings=settings,
            job_id=job_id,
            sparsity=sparsity,
            code="internal_error",
            message=f"materialisation failed ({type(error).__name__})",
        )
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
