"""One attempt at a pruning job: claim it, run the pipeline (resuming from the stored trajectory), finish it.

Failures follow ``worker.failures``: a user error fails the job, a transient one releases it for a retry, a
lost lease stops this worker without touching the job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from core.db.models import Job
from core.db.session import session_scope
from core.jobs import crud
from core.jobs.states import JobStatus
from core.schemas.jobs import JobSpec
from core.settings import Settings
from core.storage import get_storage
from worker import engine_runner
from worker.context import JobContext
from worker.failures import TRANSIENT_ERRORS, Failure, classify
from worker.heartbeat import Heartbeat
from worker.inputs import JobInputs
from worker.sink import StorageSink, load_trajectory

logger = logging.getLogger(__name__)


class TransientFailure(Exception):
    """Raised to the task so Celery retries it with backoff; carries the cause and the lease still held."""

    def __init__(self, failure: Failure, lease: str | None) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.lease = lease


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | skipped | superseded


class JobRun:
    def __init__(self, settings: Settings, job_id: str, worker_id: str, reclaim: str | None = None) -> None:
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        self.reclaim = reclaim  # the lease of this task's previous try, if it could not give the job back
        self.heartbeat: Heartbeat | None = None
        self.cancel_seen = False

    def execute(self) -> Outcome:
        try:
            claimed = self._claim()
        except TRANSIENT_ERRORS as error:  # the database is down: the task's own retry claims it later
            raise TransientFailure(classify(error), self.reclaim) from error
        if claimed is None:
            return Outcome("skipped")
        self.context, self.spec, crashes = claimed
        logger.info("job %s claimed (%d crashes so far)", self.job_id, crashes)
        if crashes > self.settings.max_crashes:
            # A job that keeps killing its worker (out of memory, a crashing kernel) must not loop forever.
            message = f"the job's worker died {crashes} times; it was not resumed again"
            return self._finish(JobStatus.failed, "worker_lost_repeatedly", message, None)
        self.heartbeat = Heartbeat(self.settings, self.job_id, self._lease())
        self.heartbeat.start()
        try:
            return self._run()
        except Exception as error:
            return self._handle(error)
        finally:
            self.heartbeat.stop()
            engine_runner.release_memory()

    def _claim(self) -> tuple[JobContext, JobSpec, int] | None:
        with session_scope(self.settings) as session:
            lease = crud.claim_job(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker_id,
                stale_after_s=self.settings.stale_after_s,
            )
            job = session.get(Job, self.job_id)
            if lease is None or job is None:
                logger.info("job %s not claimable (%s); skipping", self.job_id, job and job.status)
                return None
            context = JobContext(self.settings, get_storage(self.settings), job.tenant_id, self.job_id, lease)
            return context, JobSpec.model_validate(job.spec), job.crashes

    def _handle(self, error: Exception) -> Outcome:
        failure = classify(error)
        if failure.action == "stop":
            logger.warning("job %s was taken over by another worker; stopping", self.job_id)
            return Outcome("superseded")
        if failure.action == "retry":
            logger.warning("job %s hit a transient failure: %s", self.job_id, failure.message)
            released = self._release(f"transient failure: {failure.message}")
            raise TransientFailure(failure, None if released else self._lease()) from error
        if failure.code == "internal_error":
            logger.error("job %s failed unexpectedly", self.job_id, exc_info=error)
        return self._finish(JobStatus.failed, failure.code, failure.message, failure.field)

    def _run(self) -> Outcome:
        resume = load_trajectory(self.context)
        if resume is not None:
            logger.info("job %s resumes after step %d", self.job_id, len(resume.steps))
        trajectory = engine_runner.run_pipeline(
            self.spec,
            JobInputs(self.context, self.spec),
            StorageSink(self.context),
            settings=self.settings,
            resume=resume,
            on_step=self._on_step,
            should_stop=self._should_stop,
            on_progress=self._on_progress,
        )
        if trajectory.is_complete:
            return self._finish(JobStatus.succeeded, None, None, None)
        if self.cancel_seen:
            return self._finish(JobStatus.cancelled, None, None, None)
        raise crud.LeaseLost(self.job_id)

    def _on_step(self, record: Any, trajectory: Any) -> None:
        """The trajectory is stored first (by the sink), then the progress: the database never runs ahead."""
        with session_scope(self.settings) as session:
            status = crud.record_step(
                session=session,
                job_id=self.job_id,
                lease=self._lease(),
                step=crud.StepUpdate(
                    index=record.index,
                    total_steps=record.total_steps,
                    sparsity=record.sparsity,
                    loss=record.loss,
                    seconds=record.seconds,
                    reached_sparsities=list(trajectory.reached_sparsities),
                ),
            )
        self.cancel_seen = self.cancel_seen or status is JobStatus.cancelling

    def _on_progress(self, progress: Any) -> None:
        """A phase began or a unit of it ended: recorded with the job's ETA; checked against the lease."""
        self._check_lease()
        with session_scope(self.settings) as session:
            crud.record_phase(
                session=session,
                job_id=self.job_id,
                lease=self._lease(),
                phase=progress.phase,
                done=progress.done,
                total=progress.total,
                eta_seconds=progress.eta_seconds,
            )

    def _should_stop(self) -> bool:
        """Polled at every step boundary: stop on cancel; raise when another worker owns the job now."""
        self._check_lease()
        with session_scope(self.settings) as session:
            status = crud.current_status(session=session, job_id=self.job_id, lease=self._lease())
        if status is JobStatus.cancelling:
            self.cancel_seen = True
        if self.settings.debug_step_delay_s and not self.cancel_seen:
            # tests only: a pause between a step's checks and its work, where a test pauses or kills a worker
            time.sleep(self.settings.debug_step_delay_s)
        return self.cancel_seen

    def _lease(self) -> str:
        assert self.context.lease is not None
        return self.context.lease

    def _check_lease(self) -> None:
        if self.heartbeat is not None and self.heartbeat.lost:
            raise crud.LeaseLost(self.job_id)

    def _finish(self, status: JobStatus, code: str | None, message: str | None, field: str | None) -> Outcome:
        with session_scope(self.settings) as session:
            crud.finish_job(
                session=session,
                job_id=self.job_id,
                lease=self._lease(),
                status=status,
                error_code=code,
                error_message=message,
                error_field=field,
            )
        logger.info("job %s %s%s", self.job_id, status.value, f" ({code})" if code else "")
        return Outcome(status.value)

    def _release(self, reason: str) -> bool:
        """Give the job back to the queue; False if the database is what failed (the retry reclaims it)."""
        try:
            with session_scope(self.settings) as session:
                crud.release_job(session=session, job_id=self.job_id, lease=self._lease(), reason=reason)
        except Exception:
            logger.warning(
                "could not release job %s; its retry will take it back", self.job_id, exc_info=True
            )
            return False
        return True
