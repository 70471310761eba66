"""A real Celery worker process (prefork, one slot, embedded beat for the reaper) for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CORPUS, REDIS_URL, wait_until

# Steps are slowed down so a test can cancel or kill a job between two steps.
STEP_DELAY_S = "0.4"


class WorkerProcess:
    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env = env
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        queue = self.env["GISP_TASK_QUEUE"]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                f"{queue},{queue}.maintenance",
                "-c",
                "1",
                "-P",
                "prefork",
                "-B",
                "-s",
                str(self.workdir / f"beat-{self.starts}"),
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"test{self.starts}-{os.getpid()}@%h",
                "--loglevel",
                "INFO",
            ],
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so a SIGKILL takes the pool children too
            cwd=Path(__file__).resolve().parents[2],
        )
        wait_until(
            lambda: self.alive() and b"ready." in self.log_path.read_bytes(),
            timeout=90,
            interval=0.2,
            what="the Celery worker to be ready",
        )

    def alive(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log_path.read_text()[-3000:]}")
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the whole worker (main process, pool child and beat): nothing gets to clean up."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def _purge_queues(queue: str) -> None:
    import redis

    connection = redis.Redis.from_url(REDIS_URL)
    for name in connection.scan_iter(match=f"{queue}*"):
        connection.delete(name)
    connection.close()


def _cancel_queued_jobs(service_env: dict[str, str]) -> None:
    from sqlalchemy import update

    from core.db.models import Job
    from core.db.session import session_scope
    from core.settings import Settings

    settings = Settings(**{key.removeprefix("GISP_").lower(): value for key, value in service_env.items()})
    with session_scope(settings) as session:
        session.execute(update(Job).where(Job.status == "queued").values(status="cancelled"))


def write_named_sets(data: Path) -> None:
    """Stand-in WikiText-2 files: validation for the named calibration set, test for perplexity reports."""
    folder = data / "wikitext-2"
    folder.mkdir(parents=True, exist_ok=True)
    articles = [
        f" = Article {i} = \n\n " + " ".join(CORPUS[i % 4 :] + CORPUS[: i % 4]) + " \n" for i in range(8)
    ]
    (folder / "wiki.valid.tokens").write_text("\n".join(articles), encoding="utf-8")
    raw = data / "wikitext-2-raw"
    raw.mkdir(exist_ok=True)
    (raw / "wiki.test.raw").write_text("\n".join(reversed(articles)), encoding="utf-8")


@pytest.fixture(scope="session")
def named_sets(service_dirs: dict[str, Path]) -> None:
    write_named_sets(service_dirs["data"])


@pytest.fixture(scope="session")
def worker_process(
    service_env: dict[str, str], tiny_model: str, named_sets: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    # Messages left by the API tests (nobody consumed them) must not reach this worker, nor the jobs they
    # submitted: the reaper sends every queued job again, so those are cancelled first.
    _purge_queues(service_env["GISP_TASK_QUEUE"])
    _cancel_queued_jobs(service_env)
    env = {**service_env, "GISP_DEBUG_STEP_DELAY_S": STEP_DELAY_S}
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker"))
    try:
        yield worker
    finally:
        worker.stop()
        _purge_queues(service_env["GISP_TASK_QUEUE"])


@pytest.fixture
def worker(worker_process: WorkerProcess) -> WorkerProcess:
    """The worker, (re)started if a previous test killed it."""
    if worker_process.process is None or worker_process.process.poll() is not None:
        worker_process.start()
    return worker_process


def wait_for_job(client, job_id: str, condition, timeout: float = 120):  # type: ignore[no-untyped-def]
    """Poll the API until ``condition(job)`` holds; returns the job."""

    def check():  # type: ignore[no-untyped-def]
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if condition(job) else None

    started = time.monotonic()
    try:
        return wait_until(check, timeout=timeout, interval=0.1, what=f"job {job_id}")
    except TimeoutError:
        job = client.get(f"/v1/jobs/{job_id}").json()
        raise AssertionError(f"job did not get there in {time.monotonic() - started:.0f}s: {job}") from None


def stored_trajectory(service_settings, job_id: str) -> dict:  # type: ignore[no-untyped-def]
    """The job's trajectory as readers find it: through the row that points at the current object."""
    import json

    from core.db.session import session_scope
    from core.jobs.fencing import artifact_key
    from core.storage import get_storage

    with session_scope(service_settings) as session:
        key = artifact_key(session=session, job_id=job_id, kind="trajectory", name="trajectory.json")
    assert key is not None, "no trajectory stored"
    return json.loads(get_storage(service_settings).get_bytes(key))
