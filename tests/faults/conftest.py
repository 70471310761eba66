"""A whole service stack per fault test: its own PostgreSQL, Redis and S3 server, which the test stops,
pauses and restarts; the API in-process and real Celery worker processes.

Timing settings are short (heartbeat 0.5 s, a worker silent for 4 s is presumed dead, messages older than
3 s are sent again) so each fault plays out in seconds; nothing here waits on a fixed sleep.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.faults.services import OwnMoto, OwnPostgres, OwnRedis
from tests.utils.tiny import save_tiny_model
from tests.worker.conftest import WorkerProcess, write_named_sets

pytestmark = pytest.mark.faults


@dataclass
class Stack:
    root: Path
    postgres: OwnPostgres
    redis: OwnRedis
    moto: OwnMoto
    env: dict[str, str]
    workers: list[WorkerProcess] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Any:
        from core.settings import Settings

        values = {key.removeprefix("GISP_").lower(): value for key, value in self.env.items()}
        return Settings(**{**values, **overrides})

    def client(self, tenant: str = "faults", **overrides: Any) -> httpx.Client:
        """An in-process API client for a fresh key of ``tenant``."""
        from fastapi.testclient import TestClient

        from api.main import create_app
        from core.db.session import session_scope
        from core.jobs.tenants import create_api_key

        settings = self.settings(**overrides)
        with session_scope(settings) as session:
            key, _ = create_api_key(session=session, tenant_name=tenant)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {key}"
        return client

    def worker(self, **env: str) -> WorkerProcess:
        process = WorkerProcess({**self.env, **env}, self.root / f"worker{len(self.workers)}")
        process.workdir.mkdir(parents=True, exist_ok=True)
        self.workers.append(process)
        return process


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    from core.db.migrate import upgrade
    from core.db.session import dispose_engines

    postgres = OwnPostgres().init()
    redis = OwnRedis(tmp_path / "redis").start()
    moto = OwnMoto().start()
    models, data = tmp_path / "models", tmp_path / "data"
    save_tiny_model(models / "tiny")
    write_named_sets(data)
    run = uuid.uuid4().hex[:8]
    env = {
        "GISP_ENVIRONMENT": "test",
        "GISP_DATABASE_URL": postgres.url,
        "GISP_BROKER_URL": redis.url,
        "GISP_TASK_QUEUE": f"faults-{run}",
        "GISP_STORAGE_BACKEND": "s3",
        "GISP_S3_ENDPOINT_URL": moto.url,
        "GISP_S3_BUCKET": f"faults-{run}",
        "GISP_S3_CREATE_BUCKET": "true",
        "GISP_MODELS_DIR": str(models),
        "GISP_DATA_DIR": str(data),
        "GISP_HEARTBEAT_INTERVAL_S": "0.5",
        "GISP_STALE_AFTER_S": "4",
        "GISP_REAPER_INTERVAL_S": "1",
        "GISP_RETRY_BACKOFF_S": "0.5",
        "GISP_RETRY_BACKOFF_MAX_S": "2",
        "GISP_REQUEUE_AFTER_S": "3",
    }
    upgrade(postgres.url)
    stack = Stack(tmp_path, postgres, redis, moto, env)
    try:
        yield stack
    finally:
        for worker in stack.workers:
            worker.stop()
        dispose_engines()
        moto.stop()
        redis.stop()
        postgres.remove()


def job_body(steps: int = 8, sparsities: tuple[float, ...] = (0.2, 0.4)) -> dict[str, Any]:
    return {
        "model": "local/tiny",
        "calibration": {"name": "wikitext2"},
        "samples": 4,
        "seq_len": 32,
        "sparsities": list(sparsities),
        "steps": steps,
    }


def wait_for(
    client: httpx.Client, job_id: str, condition: Callable[[dict[str, Any]], bool], timeout: float = 180
) -> dict[str, Any]:
    from tests.conftest import wait_until

    def check() -> dict[str, Any] | None:
        answer = client.get(f"/v1/jobs/{job_id}")
        job = answer.json() if answer.status_code == 200 else None
        return job if job is not None and condition(job) else None

    return wait_until(check, timeout=timeout, interval=0.1, what=f"job {job_id}")  # type: ignore[return-value]


TERMINAL = {"succeeded", "failed", "cancelled"}
