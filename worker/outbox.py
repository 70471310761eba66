"""Sending work to the workers, one rule for every enqueue: the database row first, the message second.

A job (or an on-demand checkpoint, or a selection to re-measure) is committed ``queued`` (``pending``) before its message is sent, and
``enqueued_at`` records when a message last left for the broker. If the send fails, the row stays as it is,
waiting: the client gets a 503, a retry with the same Idempotency-Key sends it again, and the reaper sends
again anything waiting whose message is missing or old (GISP_REQUEUE_AFTER_S). Consumers are idempotent
(a claim is a conditional update), so a message sent twice does no work twice.

Cheap to import (Celery, no torch): the API sends through it by task name.
"""

from __future__ import annotations

from core.db.session import session_scope
from core.jobs import crud, verifications
from core.settings import Settings
from worker.celery_app import MATERIALIZE_TASK, RUN_JOB_TASK, VERIFY_TASK, get_celery_app


class BrokerUnavailable(Exception):
    """The message could not be handed to the broker; the row stays waiting for a retry or the reaper."""


def _send(settings: Settings, name: str, args: list[str]) -> None:
    try:
        get_celery_app(settings).send_task(name, args=args, queue=settings.task_queue)
    except Exception as error:  # kombu raises many types when the broker is down
        raise BrokerUnavailable(str(error)) from error


def send_job(settings: Settings, job_id: str) -> None:
    _send(settings, RUN_JOB_TASK, [job_id])
    with session_scope(settings) as session:
        crud.mark_job_enqueued(session=session, job_id=job_id)


def send_checkpoint(settings: Settings, job_id: str, label: str, checkpoint_id: str) -> None:
    _send(settings, MATERIALIZE_TASK, [job_id, label])
    with session_scope(settings) as session:
        crud.mark_checkpoint_enqueued(session=session, checkpoint_id=checkpoint_id)


def send_verification(settings: Settings, verification_id: str) -> None:
    _send(settings, VERIFY_TASK, [verification_id])
    with session_scope(settings) as session:
        verifications.mark_enqueued(session=session, verification_id=verification_id)


def resend_waiting(settings: Settings) -> dict[str, int]:
    """The reaper's half of the rule: send again what is waiting without a recent message."""
    with session_scope(settings) as session:
        jobs = crud.jobs_to_send(session=session, older_than_s=settings.requeue_after_s)
        checkpoints = crud.checkpoints_to_send(
            session=session,
            older_than_s=settings.requeue_after_s,
            stale_claim_s=settings.materialize_time_limit_s + 60,
        )
        measurements = verifications.to_send(
            session=session,
            older_than_s=settings.requeue_after_s,
            stale_claim_s=settings.verify_time_limit_s + 60,
        )
    for job_id in jobs:
        send_job(settings, job_id)
    for job_id, label, checkpoint_id in checkpoints:
        send_checkpoint(settings, job_id, label, checkpoint_id)
    for verification_id in measurements:
        send_verification(settings, verification_id)
    return {"jobs": len(jobs), "checkpoints": len(checkpoints), "verifications": len(measurements)}
