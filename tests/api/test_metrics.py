"""/metrics under two uvicorn worker processes: every scrape counts the requests both of them served."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_until

HEALTHZ_COUNT = re.compile(
    r'^gisp_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.MULTILINE
)
MAX_REQUESTS = 2000  # the kernel spreads connections over the two processes; this bounds the wait for both


class Server:
    """uvicorn with two worker processes, logging each line with the id of the process that wrote it."""

    def __init__(self, url: str, log: Path) -> None:
        self.url = url
        self.log = log

    def _lines(self, text: str) -> Counter[str]:
        pids = [line.split(" ", 1)[0] for line in self.log.read_text().splitlines() if text in line]
        return Counter(pids)

    def started(self) -> Counter[str]:
        return self._lines("Application startup complete")

    def served_healthz(self) -> Counter[str]:
        """Requests to /healthz per process, from uvicorn's access log (independent of the metrics)."""
        return self._lines('"GET /healthz HTTP/1.1" 200')


def _log_config(path: Path, log: Path) -> Path:
    handler = {"class": "logging.FileHandler", "filename": str(log), "formatter": "pid"}
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"pid": {"format": "%(process)d %(name)s %(message)s"}},
        "handlers": {"file": handler},
        "loggers": {
            "uvicorn": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "uvicorn.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        },
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def two_process_server(tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "uvicorn.log"
    log.touch()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"),  # created by the app itself
        "WEB_CONCURRENCY": "2",  # as in the API image: uvicorn reads it as --workers
        "GISP_ENVIRONMENT": "test",
        "GISP_DATABASE_URL": f"sqlite:///{tmp_path / 'gisp.db'}",
    }
    command = [
        sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(port),
        "--log-config", str(_log_config(tmp_path / "logging.json", log)),
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
        start_new_session=True,
    )
    server = Server(f"http://127.0.0.1:{port}", log)
    try:
        wait_until(lambda: len(server.started()) == 2, timeout=120, interval=0.2, what="two uvicorn workers")
        yield server
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _healthz_count(metrics: str) -> float:
    match = HEALTHZ_COUNT.search(metrics)
    return float(match.group(1)) if match else 0.0


def test_every_scrape_counts_the_requests_of_both_processes(two_process_server: Server) -> None:
    server = two_process_server
    sent = 0
    while len(server.served_healthz()) < 2 and sent < MAX_REQUESTS:
        # a new connection each time, so the kernel picks the accepting process anew
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/healthz").status_code == 200
        sent += 1
    served = server.served_healthz()
    assert len(served) == 2, f"one process served all {sent} requests: {served}"
    assert sum(served.values()) == sent
    scrapes = []
    for _ in range(20):
        with httpx.Client(base_url=server.url, timeout=10) as client:
            answer = client.get("/metrics")
        assert answer.status_code == 200
        scrapes.append(_healthz_count(answer.text))
    # Each process alone served fewer than `sent`; a scrape answered by either must still report them all.
    assert scrapes == [float(sent)] * len(scrapes), served
    assert "gisp_http_request_seconds_bucket" in answer.text
    assert "gisp_jobs" in answer.text
