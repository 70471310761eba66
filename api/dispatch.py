"""Sending work to the workers through ``worker.outbox`` (the row is committed first; the reaper re-sends
what a broker outage left waiting), so the API never imports the worker's task code."""

from __future__ import annotations

from api.errors import APIError
from core.settings import Settings
from worker.outbox import BrokerUnavailable, send_checkpoint, send_job, send_verification

RETRY_AFTER_S = 5


def _unavailable(what: str) -> APIError:
    return APIError(
        503,
        "broker_unavailable",
        f"the job queue is unreachable; {what} is stored and will be sent when it answers, or retry",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def enqueue_job(settings: Settings, job_id: str) -> None:
    try:
        send_job(settings, job_id)
    except BrokerUnavailable:
        raise _unavailable(f"job {job_id}") from None


def enqueue_materialize(settings: Settings, job_id: str, label: str, checkpoint_id: str) -> None:
    try:
        send_checkpoint(settings, job_id, label, checkpoint_id)
    except BrokerUnavailable:
        raise _unavailable(f"the request for checkpoint {label}") from None


def enqueue_verification(settings: Settings, verification_id: str) -> None:
    try:
        send_verification(settings, verification_id)
    except BrokerUnavailable:
        raise _unavailable("the request to re-measure the selection") from None
