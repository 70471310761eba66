"""Sending work to the workers: by task name only, so the API never imports the worker's task code."""

from __future__ import annotations

from api.errors import APIError
from core.settings import Settings
from worker.celery_app import MATERIALIZE_TASK, RUN_JOB_TASK, get_celery_app


def _send(settings: Settings, name: str, args: list[str]) -> None:
    app = get_celery_app(settings)
    try:
        app.send_task(name, args=args, queue=settings.task_queue)
    except Exception as error:  # kombu raises many types when the broker is down
        raise APIError(503, "broker_unavailable", "the job queue is unreachable; try again") from error


def enqueue_job(settings: Settings, job_id: str) -> None:
    _send(settings, RUN_JOB_TASK, [job_id])


def enqueue_materialize(settings: Settings, job_id: str, label: str) -> None:
    _send(settings, MATERIALIZE_TASK, [job_id, label])
