"""``GET /select?verify=true``: the curve's choice re-measured by a worker (the API never imports torch).

The first request stores what is to be measured (a row keyed by the job and a digest of the bounds and
candidates) and sends it to a worker through the outbox; until the worker has answered, every request gets
202 with Retry-After. Then the row answers: the verified point with its re-measured figures beside the
curve's for each point tried, or ``no_point_verified`` when every candidate missed a bound once re-measured.
"""

from __future__ import annotations

from typing import Any

from fastapi import status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.dispatch import enqueue_verification
from api.errors import APIError
from core.db.models import Job, Verification
from core.jobs.selection import Selection, accuracy_ratio, verification_request
from core.jobs.states import VerificationStatus, sparsity_label
from core.jobs.verifications import ensure_verification
from core.schemas.curve import (
    Curve,
    CurvePoint,
    SelectionBounds,
    SelectionFigures,
    SelectionPublic,
    VerificationPending,
    VerificationPublic,
    VerifiedPoint,
)
from core.schemas.jobs import JobSpec
from core.settings import Settings


def figures(point: CurvePoint, dense: CurvePoint) -> SelectionFigures:
    return SelectionFigures(
        parameters=point.parameters,
        perplexity=point.perplexity,
        latency_ms=point.latency_ms,
        accuracy=point.accuracy,
        accuracy_ratio=accuracy_ratio(point, dense),
    )


def verified_selection(
    *,
    session: Session,
    settings: Settings,
    job: Job,
    curve: Curve,
    bounds: SelectionBounds,
    chosen: Selection,
) -> SelectionPublic | JSONResponse:
    """The verified answer, or 202 while a worker measures (sending the request first if it is new)."""
    if JobSpec.model_validate(job.spec).curve is None:
        raise APIError(
            409,
            "verify_unavailable",
            "the run measured no curve (its job asked for none), so there is no evaluation to repeat",
            field="verify",
        )
    request = verification_request(curve, bounds, chosen)
    row, _ = ensure_verification(session=session, job_id=job.id, request=request)
    session.commit()
    state = VerificationStatus(row.status)
    if state is VerificationStatus.pending and row.enqueued_at is None:
        # never handed to the queue (new, or the broker was down): send it; a 503 leaves it to the reaper
        enqueue_verification(settings, row.id)
    if state is VerificationStatus.failed:
        raise APIError(
            409,
            row.error_code or "verification_failed",
            row.error_message or "the selection could not be re-measured",
            field=row.error_field,
        )
    if state is not VerificationStatus.ready:
        pending = VerificationPending(
            status=state.value,
            curve_choice=chosen.point.label,
            candidates=[c["label"] for c in request["candidates"]],
        )
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content=pending.model_dump(),
            headers={"Retry-After": str(pending.retry_after_seconds)},
        )
    return _answer(job, row, curve.dense, bounds, chosen)


def _answer(
    job: Job, row: Verification, dense: CurvePoint, bounds: SelectionBounds, chosen: Selection
) -> SelectionPublic:
    result: dict[str, Any] = row.result or {}
    tried = [
        VerifiedPoint(
            sparsity=entry["sparsity"],
            label=entry["label"],
            curve=figures(CurvePoint.model_validate(entry["curve"]), dense),
            measured=figures(CurvePoint.model_validate(entry["measured"]), dense),
            meets=entry["meets"],
        )
        for entry in result["tried"]
    ]
    answer = tried[-1]
    steps = len(tried) - 1
    stepped = f", {steps} step{'s' * (steps != 1)} back from {chosen.point.label}" if steps else ""
    return SelectionPublic(
        sparsity=answer.sparsity,
        label=answer.label,
        figures=answer.measured,
        rule=f"{chosen.rule}, verified by re-measuring{stepped}",
        bounds=bounds,
        download_url=f"/v1/jobs/{job.id}/checkpoints/{sparsity_label(answer.sparsity)}",
        verification=VerificationPublic(
            curve_choice=chosen.point.label, tried=tried, evaluation=result.get("evaluation", {})
        ),
    )
