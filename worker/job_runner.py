"""One attempt at a pruning job: claim it, prune (resuming from the stored trajectory), publish the results.

Failure policy:

* ``UserInputError`` (unsupported model, bad calibration...): the job fails at once with the error's code.
* Storage or database trouble (:data:`TRANSIENT_ERRORS`): the job goes back to ``queued`` and the task is
  retried with backoff; the next attempt resumes from the last trajectory written to storage.
* The lease lost to another worker (this one was presumed dead): stop quietly, touching nothing.
* Anything else is a bug: the job fails with ``internal_error`` (the message names the exception type only).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from core.db.models import Job
from core.db.session import session_scope
from core.errors import UserInputError
from core.jobs import crud
from core.jobs.states import JobStatus
from core.schemas.jobs import JobCreate, SpecError
from core.settings import Settings
from core.storage import Storage, StorageError, get_storage, report_key
from worker import artifacts, calibration, engine_runner, evaluation
from worker.heartbeat import Heartbeat

logger = logging.getLogger(__name__)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    StorageError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    ConnectionError,
    TimeoutError,
)


class TransientFailure(Exception):
    """Raised to the task so Celery retries it with backoff."""


@dataclass
class Outcome:
    status: str  # succeeded | failed | cancelled | skipped | superseded


class JobRun:
    def __init__(self, settings: Settings, job_id: str, worker_id: str) -> None:
        self.settings = settings
        self.job_id = job_id
        self.worker_id = worker_id
        self.storage: Storage = get_storage(settings)
        self.lease: str | None = None
        self.heartbeat: Heartbeat | None = None
        self.cancel_seen = False
        self.step_seconds: list[float] = []

    # --- entry point ---

    def execute(self) -> Outcome:
        with session_scope(self.settings) as session:
            self.lease = crud.claim_job(
                session=session,
                job_id=self.job_id,
                worker_id=self.worker_id,
                stale_after_s=self.settings.stale_after_s,
            )
            job = session.get(Job, self.job_id)
            if self.lease is None or job is None:
                logger.info("job %s not claimable (%s); skipping", self.job_id, job and job.status)
                return Outcome("skipped")
            self.tenant_id, self.spec, attempt = (
                job.tenant_id,
                JobCreate.model_validate(job.spec),
                job.attempt,
            )
        logger.info("job %s claimed (attempt %d)", self.job_id, attempt)
        if attempt > self.settings.max_attempts:
            # A job that keeps killing its worker (out of memory, a crashing kernel) must not loop forever.
            return self._finish(
                JobStatus.failed,
                "worker_lost_repeatedly",
                f"the job's worker died {attempt - 1} times; it was not resumed again",
                None,
            )
        self.heartbeat = Heartbeat(self.settings, self.job_id, self.lease)
        self.heartbeat.start()
        try:
            return self._run()
        except crud.LeaseLost:
            logger.warning("job %s was taken over by another worker; stopping", self.job_id)
            return Outcome("superseded")
        except UserInputError as error:
            return self._finish(JobStatus.failed, error.code, error.message, error.field)
        except SoftTimeLimitExceeded:
            return self._finish(
                JobStatus.failed, "time_limit_exceeded", "the job ran past the worker's time limit", None
            )
        except TRANSIENT_ERRORS as error:
            logger.warning("job %s hit a transient failure: %s", self.job_id, error)
            self._release(f"transient failure: {type(error).__name__}")
            raise TransientFailure(str(error)) from error
        except Exception as error:
            logger.exception("job %s failed unexpectedly", self.job_id)
            return self._finish(
                JobStatus.failed, "internal_error", f"the worker failed ({type(error).__name__})", None
            )
        finally:
            self.heartbeat.stop()
            engine_runner.release_memory()

    # --- the work ---

    def _run(self) -> Outcome:
        try:
            prune_settings = self.spec.to_prune_settings()
        except SpecError as error:
            raise UserInputError(error.message, field=error.field) from None
        resume = artifacts.load_trajectory(storage=self.storage, tenant_id=self.tenant_id, job_id=self.job_id)
        loaded = engine_runner.load(self.spec.model, self.settings)
        prune_settings = engine_runner.settings_for_layout(prune_settings, loaded, self.spec.layout)
        items = self._calibration_items()
        if resume is not None:
            logger.info("job %s resumes after step %d", self.job_id, len(resume.steps))
        trajectory = engine_runner.run_prune(
            loaded,
            items,
            prune_settings,
            on_step=self._on_step,
            should_stop=self._should_stop,
            resume=resume,
        )
        artifacts.save_trajectory(
            settings=self.settings,
            storage=self.storage,
            tenant_id=self.tenant_id,
            job_id=self.job_id,
            trajectory=trajectory,
        )
        if not trajectory.is_complete:
            if self.cancel_seen:
                return self._finish(JobStatus.cancelled, None, None, None)
            raise crud.LeaseLost(self.job_id)
        for sparsity in prune_settings.sparsities:
            self._check_lease()
            artifacts.materialize_checkpoint(
                settings=self.settings,
                storage=self.storage,
                tenant_id=self.tenant_id,
                job_id=self.job_id,
                loaded=loaded,
                trajectory=trajectory,
                sparsity=sparsity,
                layout=self.spec.layout,
                is_target=True,
                calibration=items,
            )
        self._write_report(loaded, trajectory, prune_settings.sparsities, items)
        return self._finish(JobStatus.succeeded, None, None, None)

    def _calibration_items(self) -> list[Any]:
        return calibration.job_calibration_items(
            settings=self.settings, storage=self.storage, tenant_id=self.tenant_id, spec=self.spec
        )

    def _on_step(self, record: Any, trajectory: Any) -> None:
        """Persist the trajectory first, then the progress: the database never runs ahead of storage."""
        artifacts.save_trajectory(
            settings=self.settings,
            storage=self.storage,
            tenant_id=self.tenant_id,
            job_id=self.job_id,
            trajectory=trajectory,
        )
        self.step_seconds.append(record.seconds)
        remaining = record.total_steps - record.index
        eta = remaining * sum(self.step_seconds) / len(self.step_seconds)
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
                    eta_seconds=eta,
                    reached_sparsities=list(trajectory.reached_sparsities),
                ),
            )
        self.cancel_seen = self.cancel_seen or status is JobStatus.cancelling
        if self.settings.debug_step_delay_s and remaining:
            time.sleep(self.settings.debug_step_delay_s)

    def _should_stop(self) -> bool:
        """Polled at every step boundary: stop on cancel; raise when another worker owns the job now."""
        self._check_lease()
        with session_scope(self.settings) as session:
            status = crud.current_status(session=session, job_id=self.job_id, lease=self._lease())
        if status is JobStatus.cancelling:
            self.cancel_seen = True
        return self.cancel_seen

    def _write_report(self, loaded: Any, trajectory: Any, targets: list[float], items: list[Any]) -> None:
        report, files = evaluation.build_report(
            loaded=loaded,
            trajectory=trajectory,
            calibration=items,
            layout=self.spec.layout,
            targets=targets,
            evaluations=self.spec.evaluations,
            settings=self.settings,
        )
        for name, data in files.items():
            key = report_key(self.tenant_id, self.job_id, f"report/{name}")
            stored = self.storage.put_bytes(key, data)
            self._record_artifact("plot", key, name, stored.sha256, stored.size)
        key = report_key(self.tenant_id, self.job_id)
        stored = self.storage.put_bytes(
            key, json.dumps(report, indent=1).encode(), content_type="application/json"
        )
        self._record_artifact("report", key, "report.json", stored.sha256, stored.size)

    # --- bookkeeping ---

    def _record_artifact(self, kind: str, key: str, name: str, sha256: str, size: int) -> None:
        with session_scope(self.settings) as session:
            crud.record_artifact(
                session=session,
                job_id=self.job_id,
                kind=kind,
                key=key,
                name=name,
                sha256=sha256,
                size_bytes=size,
            )

    def _lease(self) -> str:
        assert self.lease is not None
        return self.lease

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

    def _release(self, reason: str) -> None:
        try:
            with session_scope(self.settings) as session:
                crud.release_job(session=session, job_id=self.job_id, lease=self._lease(), reason=reason)
        except Exception:  # the database itself may be what failed: the reaper will re-queue the job
            logger.warning(
                "could not release job %s; the reaper will re-queue it", self.job_id, exc_info=True
            )
