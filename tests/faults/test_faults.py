"""Faults injected into a real stack (own PostgreSQL, Redis and S3 server; Celery worker processes): no job
corrupted or lost, outages waited out and reported as what they are, never a 500."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from typing import Any

import pytest

from tests.conftest import free_port, wait_until
from tests.faults.conftest import TERMINAL, Stack, job_body, wait_for

pytestmark = pytest.mark.faults


def _stored_trajectory(stack: Stack, job_id: str) -> dict[str, Any]:
    from core.db.session import session_scope
    from core.jobs.fencing import artifact_key
    from core.storage import get_storage

    settings = stack.settings()
    with session_scope(settings) as session:
        key = artifact_key(session=session, job_id=job_id, kind="trajectory", name="trajectory.json")
    assert key is not None
    return json.loads(get_storage(settings).get_bytes(key))


def _job_row(stack: Stack, job_id: str) -> Any:
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(stack.settings()) as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def _log_says(worker: Any, text: str) -> bool:
    return text in worker.log_path.read_text(errors="replace")


def test_a_paused_worker_that_lost_its_job_writes_nothing(stack: Stack) -> None:
    """Worker A is paused mid-run; B takes the job over and finishes it; A, resumed, must not write a byte
    that anyone reads: the trajectory stays complete and every checkpoint downloads."""
    client = stack.client()
    first = stack.worker(GISP_DEBUG_STEP_DELAY_S="0.5")
    first.start()
    job_id = client.post("/v1/jobs", json=job_body(steps=8)).json()["id"]
    wait_for(client, job_id, lambda j: j["progress"]["step"] >= 3)
    assert first.process is not None
    os.killpg(first.process.pid, signal.SIGSTOP)
    second = stack.worker()
    second.start()
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    finished = _stored_trajectory(stack, job_id)
    assert len(finished["steps"]) == len(finished["schedule"])

    os.killpg(first.process.pid, signal.SIGCONT)
    wait_until(
        lambda: _log_says(first, "taken over by another worker"), timeout=60, what="the first worker to stop"
    )
    assert _stored_trajectory(stack, job_id) == finished
    after = client.get(f"/v1/jobs/{job_id}").json()
    assert after["status"] == "succeeded" and after["progress"]["step"] == len(finished["steps"])
    for checkpoint in after["checkpoints"]:
        assert client.get(checkpoint["download_url"]).status_code == 200
    assert _job_row(stack, job_id).crashes == 1  # the takeover, counted once


def test_a_storage_outage_is_waited_out_and_is_not_a_crash(stack: Stack) -> None:
    client = stack.client()
    worker = stack.worker(GISP_DEBUG_STEP_DELAY_S="0.3", GISP_S3_TIMEOUT_S="2")
    worker.start()
    job_id = client.post("/v1/jobs", json=job_body(steps=6)).json()["id"]
    wait_for(client, job_id, lambda j: j["progress"]["step"] >= 2)
    stack.moto.pause()
    wait_until(lambda: _job_row(stack, job_id).transient_retries >= 3, timeout=120, what="three retries")
    stack.moto.resume()
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    job = _job_row(stack, job_id)
    assert job.crashes == 0 and job.transient_retries >= 3 and job.transient_since is None
    assert len(_stored_trajectory(stack, job_id)["steps"]) == done["progress"]["total_steps"]


def test_an_outage_longer_than_the_deadline_fails_the_job_with_its_cause(stack: Stack) -> None:
    client = stack.client()
    worker = stack.worker(GISP_S3_TIMEOUT_S="1", GISP_TRANSIENT_DEADLINE_S="4", GISP_DEBUG_STEP_DELAY_S="0.3")
    worker.start()
    job_id = client.post("/v1/jobs", json=job_body(steps=6)).json()["id"]
    wait_for(client, job_id, lambda j: j["progress"]["step"] >= 1)
    stack.moto.pause()
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL, timeout=240)
    stack.moto.resume()
    assert done["status"] == "failed"
    assert done["error"]["code"] == "storage_unavailable", done["error"]
    assert _job_row(stack, job_id).crashes == 0


def test_queued_jobs_whose_message_the_broker_lost_are_sent_again(stack: Stack) -> None:
    client = stack.client()
    job_id = client.post("/v1/jobs", json=job_body(steps=2)).json()["id"]
    stack.redis.stop()  # the broker restarts empty: the job's message is gone
    stack.redis.start()
    assert client.get("/readyz").status_code == 200
    worker = stack.worker()
    worker.start()
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 1


def test_a_checkpoint_asked_for_while_the_broker_is_down_is_built_once_it_is_back(stack: Stack) -> None:
    client = stack.client()
    worker = stack.worker()
    worker.start()
    job_id = client.post("/v1/jobs", json=job_body(steps=4, sparsities=(0.4,))).json()["id"]
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    listing = client.get(f"/v1/jobs/{job_id}/checkpoints").json()
    extra = f"{listing['reached_sparsities'][0]:.4f}"

    stack.redis.stop()
    refused = client.get(f"/v1/jobs/{job_id}/checkpoints/{extra}")
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert refused.json()["error"]["code"] == "broker_unavailable"
    stack.redis.start()  # empty: nothing was sent; the reaper sends the waiting checkpoint
    ready = wait_until(
        lambda: (r := client.get(f"/v1/jobs/{job_id}/checkpoints/{extra}")).status_code == 200 and r,
        timeout=120,
        interval=0.3,
        what="the checkpoint asked for during the outage",
    )
    assert ready.headers["content-type"] == "application/x-tar"


def test_a_verification_asked_for_while_the_broker_is_down_is_measured_once_it_is_back(stack: Stack) -> None:
    client = stack.client()
    worker = stack.worker()
    worker.start()
    body = job_body(steps=4, sparsities=(0.4,)) | {"curve": {"points": 3, "perplexity_windows": 2}}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    loosest = max(p["perplexity"] for p in client.get(f"/v1/jobs/{job_id}/curve").json()["points"])
    params = {"max_perplexity": loosest * 1.01, "verify": "true"}

    stack.redis.stop()
    refused = client.get(f"/v1/jobs/{job_id}/select", params=params)
    assert refused.status_code == 503 and refused.headers["retry-after"], refused.text
    assert refused.json()["error"]["code"] == "broker_unavailable"
    stack.redis.start()  # empty: nothing was sent; the reaper sends the waiting verification
    verified = wait_until(
        lambda: (r := client.get(f"/v1/jobs/{job_id}/select", params=params)).status_code == 200 and r,
        timeout=120,
        interval=0.3,
        what="the verification asked for during the outage",
    )
    tried = verified.json()["verification"]["tried"]  # type: ignore[union-attr]
    assert tried[-1]["meets"] and tried[-1]["label"] == "0.4000"


def _serve(stack: Stack) -> tuple[int, Any]:
    import uvicorn

    from api.main import create_app

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(stack.settings()), host="127.0.0.1", port=port, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    wait_until(lambda: server.started, timeout=30, what="uvicorn")
    return port, server


def _get(
    connection: http.client.HTTPConnection, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def test_a_database_outage_answers_503_on_the_same_connection_and_readyz_stays_quick(stack: Stack) -> None:
    client = stack.client()
    key = client.headers["Authorization"]
    port, server = _serve(stack)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        assert _get(connection, "/v1/jobs", {"Authorization": key})[0] == 200
        stack.postgres.stop()
        for path in ("/v1/jobs", "/v1/jobs/job_0123456789abcdef0123456789abcdef", "/v1/models"):
            status, headers, body = _get(
                connection, path, {"Authorization": key}
            )  # the same socket throughout
            assert status == 503, (path, body)
            assert json.loads(body)["error"]["code"] == "database_unavailable"
            assert headers.get("retry-after")
        started = time.monotonic()
        status, _, body = _get(connection, "/readyz", {})
        assert status == 503 and json.loads(body)["checks"]["database"].startswith("unavailable")
        stack.moto.pause()  # a hung S3 as well: the probe still answers within its deadline
        status, _, body = _get(connection, "/readyz", {})
        assert status == 503 and json.loads(body)["checks"]["storage"].startswith("unavailable")
        assert time.monotonic() - started < 10
        stack.moto.resume()
        stack.postgres.start()
        wait_until(
            lambda: _get(connection, "/v1/jobs", {"Authorization": key})[0] == 200,
            timeout=30,
            what="recovery",
        )
    finally:
        connection.close()
        server.should_exit = True


def test_a_claim_that_hits_a_database_outage_is_recovered_by_the_worker_itself(stack: Stack) -> None:
    client = stack.client()
    job_id = client.post("/v1/jobs", json=job_body(steps=2)).json()["id"]
    stack.postgres.stop()
    worker = stack.worker()
    worker.start()  # the run message is waiting; its claim meets the outage
    wait_until(lambda: _log_says(worker, "Retry in"), timeout=60, what="the task to retry")
    stack.postgres.start()
    done = wait_for(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done
    assert _job_row(stack, job_id).crashes == 0
