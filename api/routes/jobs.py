"""Jobs: submit, list, inspect, follow events, cancel."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response, status
from sqlalchemy.orm import Session

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.dispatch import enqueue_job
from api.errors import APIError, not_found
from api.params import JobId, event_id
from api.serializers import event_public, job_public
from api.validation import validate_job_request
from core.db.models import Job
from core.jobs import crud
from core.jobs.states import JobStatus
from core.schemas.errors import ErrorBody
from core.schemas.jobs import EventsPublic, JobPublic, JobSpec, JobsPublic

router = APIRouter(prefix="/jobs", tags=["jobs"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "missing or invalid API key"},
    404: {"model": ErrorBody, "description": "no such job for this tenant"},
    422: {"model": ErrorBody, "description": "invalid request; `field` names the culprit"},
}

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=200,
        description="repeat a submission safely: the same key and body return the same job",
    ),
]


def load_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job, or 404 (another tenant's id is indistinguishable from an unknown one)."""
    job = crud.get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise not_found("job")
    return job


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic,
    responses={
        **ERRORS,
        200: {"model": JobPublic, "description": "replay of an idempotent submission"},
        409: {"model": ErrorBody, "description": "Idempotency-Key reused with another body"},
        413: {"model": ErrorBody, "description": "body larger than GISP_MAX_REQUEST_BYTES"},
    },
)
def create_job(
    job_in: JobSpec,
    session: SessionDep,
    settings: SettingsDep,
    tenant: CurrentTenant,
    response: Response,
    idempotency_key: IdempotencyKey = None,
) -> JobPublic:
    """Submit a pruning job; it is queued for a GPU worker."""
    job_in = validate_job_request(session=session, settings=settings, tenant_id=tenant.id, job_in=job_in)
    try:
        job, created = crud.create_job(
            session=session, tenant_id=tenant.id, job_in=job_in, idempotency_key=idempotency_key
        )
    except crud.IdempotencyConflict as error:
        raise APIError(409, "idempotency_conflict", str(error), field="Idempotency-Key") from None
    session.commit()
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
        if job.status == JobStatus.queued.value and job.enqueued_at is None:
            enqueue_job(settings, job.id)  # the first try could not reach the queue: this one sends it
        return job_public(job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    enqueue_job(settings, job.id)  # a 503 leaves the job queued: a replay or the reaper sends it later
    return job_public(job)


@router.get("", response_model=JobsPublic, responses=ERRORS)
def list_jobs(
    session: SessionDep,
    settings: SettingsDep,
    tenant: CurrentTenant,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> JobsPublic:
    """The tenant's jobs, newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""
    page = min(limit or settings.page_size_default, settings.page_size_max)
    try:
        jobs, next_cursor = crud.list_jobs(
            session=session, tenant_id=tenant.id, status=status_filter, cursor=cursor, limit=page
        )
    except ValueError:
        raise APIError(422, "validation_error", "invalid cursor", field="cursor") from None
    return JobsPublic(data=[job_public(job) for job in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, responses=ERRORS)
def get_job(job_id: JobId, session: SessionDep, tenant: CurrentTenant) -> Response:
    """Status, progress (step, loss, ETA), error and checkpoints of one job."""
    # The hottest route (clients poll it): serialised once here rather than re-validated by FastAPI.
    return Response(
        job_public(load_job(session, tenant.id, job_id)).model_dump_json(), media_type="application/json"
    )


@router.get("/{job_id}/events", response_model=EventsPublic, responses=ERRORS)
def list_events(
    job_id: JobId,
    session: SessionDep,
    settings: SettingsDep,
    tenant: CurrentTenant,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> EventsPublic:
    """State changes and every step's metrics, oldest first."""
    job = load_job(session, tenant.id, job_id)
    after = event_id(cursor, field="cursor") if cursor else None
    page = min(limit or settings.page_size_default, settings.page_size_max)
    events, next_cursor = crud.list_events(session=session, job_id=job.id, after=after, limit=page)
    return EventsPublic(data=[event_public(e) for e in events], next_cursor=next_cursor)


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=ERRORS)
def cancel_job(job_id: JobId, session: SessionDep, tenant: CurrentTenant) -> JobPublic:
    """Cancel a queued job now, or a running one at its next step boundary; finished jobs are unchanged."""
    job = load_job(session, tenant.id, job_id)
    crud.request_cancel(session=session, job=job)
    session.commit()
    return job_public(job)
