"""Re-measuring a selection on a worker: claim the request's row, measure its candidates, write the outcome.

The row (``core.jobs.verifications``) holds what the API chose from the curve and the candidates to step back
to; the worker needs the job only for its model, calibration set, trajectory and curve settings. The outcome
is written under the claim: a worker that lost its claim (presumed dead, replaced) writes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from core.db.models import Job, Verification
from core.db.session import session_scope
from core.errors import UserInputError
from core.jobs import verifications
from core.jobs.crud import LeaseLost
from core.jobs.selection import no_point_verified
from core.jobs.states import VerificationStatus
from core.schemas.curve import CurvePoint, SelectionBounds
from core.schemas.jobs import JobSpec
from core.settings import Settings
from core.storage import get_storage
from worker import engine_runner
from worker.context import JobContext
from worker.inputs import JobInputs
from worker.sink import load_trajectory

logger = logging.getLogger(__name__)


@dataclass
class VerificationWork:
    verification_id: str
    claim: str
    context: JobContext
    spec: JobSpec
    request: dict[str, Any]


def claim(settings: Settings, verification_id: str, reclaim: str | None) -> VerificationWork | None:
    """The work, holding a fresh claim; None if the row is gone, done, or being measured by another worker."""
    with session_scope(settings) as session:
        token = verifications.claim_verification(
            session=session,
            verification_id=verification_id,
            stale_after_s=settings.verify_time_limit_s + 60,
            reclaim=reclaim,
        )
        if token is None:
            return None
        row = session.get(Verification, verification_id)
        job = session.get(Job, row.job_id) if row is not None else None
        if row is None or job is None:
            return None
        context = JobContext(settings, get_storage(settings), job.tenant_id, job.id)
        return VerificationWork(
            verification_id, token, context, JobSpec.model_validate(job.spec), row.request
        )


def _still_held(work: VerificationWork) -> None:
    """Between two measurements: stop (touching nothing) if another worker has taken the row over."""
    with session_scope(work.context.settings) as session:
        row = session.get(Verification, work.verification_id)
        if row is None or row.claim != work.claim:
            raise LeaseLost(work.context.job_id)


def measure(work: VerificationWork) -> str:
    """Measure the candidates and write the outcome: ``ready``, or ``failed`` with ``no_point_verified``."""
    if work.spec.curve is None:
        raise UserInputError(
            "the job measured no curve, so there is no evaluation to repeat", field="verify", code="no_curve"
        )
    trajectory = load_trajectory(work.context)
    if trajectory is None:
        raise UserInputError("this job has no trajectory", field="verify", code="trajectory_not_ready")
    result = engine_runner.verify_candidates(
        JobInputs(work.context, work.spec),
        trajectory,
        work.spec.layout,
        work.spec.curve,
        work.request,
        work.context.settings,
        on_point=lambda _: _still_held(work),
    )
    if result["verified"] is not None:
        _finish(work, VerificationStatus.ready, result, None)
        return VerificationStatus.ready.value
    bounds = SelectionBounds.model_validate(work.request["bounds"])
    dense = CurvePoint.model_validate(work.request["dense"])
    message, field = no_point_verified(result["tried"], bounds, dense)
    _finish(work, VerificationStatus.failed, result, ("no_point_verified", message, field))
    return VerificationStatus.failed.value


def fail(work: VerificationWork, code: str, message: str, field: str | None) -> None:
    """The measurement itself failed (a deleted calibration set, a bug, the time limit)."""
    _finish(work, VerificationStatus.failed, None, (code, message, field))


def _finish(
    work: VerificationWork,
    status: VerificationStatus,
    result: dict[str, Any] | None,
    error: tuple[str, str, str | None] | None,
) -> None:
    with session_scope(work.context.settings) as session:
        written = verifications.finish_verification(
            session=session,
            verification_id=work.verification_id,
            claim=work.claim,
            status=status,
            result=result,
            error=error,
        )
    if not written:
        logger.info("verification %s belongs to another worker now", work.verification_id)
