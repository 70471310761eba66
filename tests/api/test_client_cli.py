"""The ``gisp jobs`` client against a real HTTP server: options anywhere, --json, one-line errors, select,
and ``wait`` resuming its event stream through a connection that drops."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.api.test_curve_routes import CURVE
from tests.conftest import wait_until
from tests.curve_seed import write_curve

pytestmark = pytest.mark.services

REPO = Path(__file__).resolve().parents[2]


def gisp(*args: str, key: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GISP_")}
    if key:
        env["GISP_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "core.cli.main", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def server(live_server) -> str:  # type: ignore[no-untyped-def]
    return live_server(sse_poll_interval_s=0.05, sse_heartbeat_s=0.3)


@pytest.fixture
def queued(client_factory, make_key, tiny_model: str):  # type: ignore[no-untyped-def]
    key = make_key("cli")
    client = client_factory("cli")
    client.headers["Authorization"] = f"Bearer {key}"
    body = {"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2}
    return key, client, client.post("/v1/jobs", json=body).json()["id"]


def test_global_options_before_or_after_the_command(server: str, queued) -> None:  # type: ignore[no-untyped-def]
    key, _, job_id = queued
    after = gisp("jobs", "status", job_id, "--url", server, "--api-key", key, "--json")
    before = gisp("jobs", "--url", server, "--api-key", key, "--json", "status", job_id)
    mixed = gisp("jobs", "--url", server, "status", job_id, "--json", key=key)
    for result in (after, before, mixed):
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["id"] == job_id
    human = gisp("jobs", "status", job_id, "--url", server, key=key)
    assert human.stdout.strip().splitlines() == [f"{job_id}  queued"]
    listing = json.loads(gisp("jobs", "list", "--url", server, "--json", key=key).stdout)
    assert job_id in [j["id"] for j in listing]
    events = gisp("jobs", "events", job_id, "--url", server, key=key).stdout.splitlines()
    assert len(events) == 1 and events[0].split()[2:4] == ["state", "queued"]
    models = json.loads(gisp("jobs", "models", "--url", server, "--json", key=key).stdout)
    assert "local/tiny" in [m["id"] for m in models["data"]]


def test_errors_are_one_line(server: str, queued) -> None:  # type: ignore[no-untyped-def]
    key, _, job_id = queued
    assert "not_found" in one_line_error(gisp("jobs", "status", "job_nope", "--url", server, key=key))
    assert "unauthorized" in one_line_error(gisp("jobs", "status", job_id, "--url", server, key="wrong"))
    assert "cannot reach" in one_line_error(gisp("jobs", "status", job_id, "--url", "http://127.0.0.1:9"))
    assert "--max-perplexity" in one_line_error(gisp("jobs", "select", job_id, "--url", server, key=key))
    assert "invalid float" in one_line_error(gisp("jobs", "select", job_id, "--max-perplexity", "x"))
    assert "required" in one_line_error(gisp("jobs", "status"))
    assert "No such file" in one_line_error(
        gisp("jobs", "submit", "--model", "local/tiny", "--calibration-file", "/nonexistent.txt",
             "--sparsities", "0.2", "--url", server, key=key)
    )  # fmt: skip
    lost = one_line_error(gisp("jobs", "wait", job_id, "--url", "http://127.0.0.1:9", "--retries", "1"))
    assert "lost the event stream after 2 attempts" in lost


def test_select_and_its_errors(server: str, queued, service_settings) -> None:  # type: ignore[no-untyped-def]
    key, _, job_id = queued
    assert "curve_not_ready" in one_line_error(
        gisp("jobs", "select", job_id, "--max-perplexity", "25", "--url", server, key=key)
    )
    write_curve(service_settings, job_id, CURVE)
    human = gisp("jobs", "select", job_id, "--max-perplexity", "25", "--url", server, key=key)
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith("0.3000  parameters 700") and "most pruned" in human.stdout
    chosen = json.loads(
        gisp("jobs", "select", job_id, "--max-params", "750", "--json", "--url", server, key=key).stdout
    )
    assert chosen["label"] == "0.3000" and chosen["download_url"].endswith("/checkpoints/0.3000")
    assert "no_point_qualifies" in one_line_error(
        gisp("jobs", "select", job_id, "--max-perplexity", "1", "--url", server, key=key)
    )
    # The queued job never ran: the chosen point cannot be downloaded, and says why on one line.
    assert "sparsity_not_reached" in one_line_error(
        gisp(
            "jobs",
            "select",
            job_id,
            "--max-perplexity",
            "25",
            "--download",
            "/tmp/x",
            "--url",
            server,
            key=key,
        )
    )


class DroppingProxy:
    """A TCP relay that cuts its first connection right after the first SSE event passed through."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            index = len(self.requests)
            self.requests.append(b"")
            threading.Thread(target=self._relay, args=(client, index), daemon=True).start()

    def _relay(self, client: socket.socket, index: int) -> None:
        upstream = socket.create_connection(self.upstream)

        def forward_requests() -> None:
            try:
                while data := client.recv(65536):
                    self.requests[index] += data
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=forward_requests, daemon=True).start()
        seen = b""
        try:
            while data := upstream.recv(65536):
                client.sendall(data)
                seen += data
                if index == 0 and b"\nid: " in b"\n" + seen and b"\n\n" in seen.split(b"id: ", 1)[-1]:
                    break  # the first event went through: drop the connection without a goodbye
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):  # the client may have gone first
                client.shutdown(socket.SHUT_RDWR)
            client.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def test_wait_resumes_the_stream_after_a_dropped_connection(server: str, queued) -> None:  # type: ignore[no-untyped-def]
    key, client, job_id = queued
    proxy = DroppingProxy(server)
    try:
        command = [
            sys.executable,
            "-m",
            "core.cli.main",
            "jobs",
            "wait",
            job_id,
            "--url",
            proxy.url,
            "--json",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GISP_")} | {"GISP_API_KEY": key}
        waiting = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stream_requests = lambda: [r for r in proxy.requests if b"/events/stream" in r]  # noqa: E731
        wait_until(lambda: len(stream_requests()) >= 2 and b"\r\n\r\n" in stream_requests()[1], timeout=30)
        first_event = client.get(f"/v1/jobs/{job_id}/events").json()["data"][0]
        assert b"last-event-id: " + str(first_event["id"]).encode() in stream_requests()[1].lower()
        client.post(f"/v1/jobs/{job_id}/cancel")  # the terminal event ends the resumed stream
        out, err = waiting.communicate(timeout=30)
    finally:
        proxy.close()
    assert waiting.returncode == 1, err  # a cancelled job is not a success
    assert json.loads(out)["status"] == "cancelled"
    assert "Traceback" not in err
    assert len(stream_requests()) == 2  # one drop, one resumption, no polling in between
