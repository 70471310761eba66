"""The Celery application, configured from :class:`core.settings.Settings`.

Importing this module is cheap (no torch): the API uses it to send tasks by name. The task code in
``worker.tasks`` is only imported by worker processes (``include``).

Delivery guarantees: tasks are acknowledged after they finish (``acks_late``) and given back when the worker
process dies (``task_reject_on_worker_lost``); each worker reserves one task at a time. A worker killed as a
whole leaves its message unacknowledged until the broker's visibility timeout, so jobs are also re-queued by
the reaper (``worker.reaper``) as soon as their heartbeat goes stale.
"""

from __future__ import annotations

import threading

from celery import Celery

from core.settings import Settings, get_settings

RUN_JOB_TASK = "gisp.run_job"
MATERIALIZE_TASK = "gisp.materialize_checkpoint"
REAP_TASK = "gisp.reap_stale_jobs"
VERIFY_TASK = "gisp.verify_selection"

_APPS: dict[tuple[str, str], Celery] = {}
_LOCK = threading.Lock()


def maintenance_queue(settings: Settings) -> str:
    """The reaper's queue: separate from the GPU queue so a busy GPU worker never delays it."""
    return f"{settings.task_queue}.maintenance"


def create_celery_app(settings: Settings) -> Celery:
    app = Celery("gisp", broker=settings.broker_url, include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.task_queue,
        task_routes={REAP_TASK: {"queue": maintenance_queue(settings)}},
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_publish_retry=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0.1, "interval_step": 0.3},
        # An unacknowledged message comes back only after this; it must outlast the longest task, or a
        # healthy long job would be delivered twice (the lease makes that harmless, but wasteful).
        broker_transport_options={"visibility_timeout": settings.task_time_limit_s + 600},
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "reap-stale-jobs": {
                "task": REAP_TASK,
                "schedule": settings.reaper_interval_s,
                "options": {"queue": maintenance_queue(settings), "expires": settings.reaper_interval_s},
            }
        },
    )
    if settings.broker_url.startswith("filesystem"):
        _use_filesystem_broker(app, settings)
    return app


def _use_filesystem_broker(app: Celery, settings: Settings) -> None:
    """Messages as files in one folder: the embedded mode's broker when no Redis is reachable.

    It has no fan-out exchanges (so no remote control) and forgets a message once a worker has taken it;
    a job whose worker dies is still recovered, by the reaper, since recovery rests on the job's heartbeat.
    """
    folder = settings.broker_dir.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "store_processed": False,
    }
    app.conf.worker_enable_remote_control = False


def get_celery_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    key = (settings.broker_url, settings.task_queue)
    with _LOCK:
        app = _APPS.get(key)
        if app is None:
            app = _APPS[key] = create_celery_app(settings)
        return app


# The worker command line (``celery -A worker.celery_app worker``) finds this attribute.
app = get_celery_app()
