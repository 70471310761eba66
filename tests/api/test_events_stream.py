"""The SSE stream's bounds and its cost to the server (PostgreSQL, no worker: the job stays queued)."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.sse_reader import Stream, messages

pytestmark = pytest.mark.services


def _queued_job(client: httpx.Client, tiny_model: str) -> str:
    body = {"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2}
    created = client.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    return created.json()["id"]


@pytest.fixture(scope="module")
def short_streams(live_server) -> str:  # type: ignore[no-untyped-def]
    return live_server(sse_poll_interval_s=0.05, sse_heartbeat_s=0.2, sse_max_duration_s=1.5)


def test_stream_sends_history_heartbeats_and_closes_after_max_duration(
    short_streams: str, client_factory, make_key, tiny_model: str
) -> None:
    key = make_key("stream-bounds")
    client = client_factory("stream-bounds")
    client.headers["Authorization"] = f"Bearer {key}"
    job_id = _queued_job(client, tiny_model)
    record = Stream()
    started = time.monotonic()
    with httpx.stream(
        "GET", f"{short_streams}/v1/jobs/{job_id}/events/stream", headers={"Authorization": f"Bearer {key}"}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(messages(response, record))
    elapsed = time.monotonic() - started
    # The job never runs: the one queued event, then heartbeats until the duration bound closes the stream.
    assert [(m.event, m.json["data"]["status"]) for m in received] == [("state", "queued")]
    assert received[0].id == str(received[0].json["id"])
    assert record.retry is not None and record.retry > 0
    assert record.comments.count("keep-alive") >= 3
    assert 1.5 <= elapsed < 10


def test_resume_parameters_and_errors(short_streams: str, client_factory, make_key, tiny_model: str) -> None:
    key = make_key("stream-resume")
    headers = {"Authorization": f"Bearer {key}"}
    client = client_factory("stream-resume")
    client.headers.update(headers)
    job_id = _queued_job(client, tiny_model)
    client.post(f"/v1/jobs/{job_id}/cancel")  # queued -> cancelled: two events, the second terminal
    events = client.get(f"/v1/jobs/{job_id}/events").json()["data"]
    assert [e["data"]["status"] for e in events] == ["queued", "cancelled"]
    url = f"{short_streams}/v1/jobs/{job_id}/events/stream"

    def read(**kwargs: object) -> list[int]:
        with httpx.stream("GET", url, timeout=10, **kwargs) as response:  # type: ignore[arg-type]
            assert response.status_code == 200, response.read()
            return [m.json["id"] for m in messages(response, Stream())]

    # A terminal job's stream replays what is missing and closes at once (no wait for the duration bound).
    started = time.monotonic()
    assert read(headers=headers) == [e["id"] for e in events]
    assert time.monotonic() - started < 1.4
    assert read(headers=headers | {"Last-Event-ID": str(events[0]["id"])}) == [events[1]["id"]]
    assert read(headers=headers, params={"last_event_id": str(events[0]["id"])}) == [events[1]["id"]]
    assert read(headers=headers | {"Last-Event-ID": str(events[1]["id"])}) == []
    # The header wins over the query parameter (an EventSource reconnecting sends its newest id there).
    both = read(headers=headers | {"Last-Event-ID": str(events[1]["id"])}, params={"last_event_id": "0"})
    assert both == []

    bad = httpx.get(url, headers=headers | {"Last-Event-ID": "12x"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
    bad = httpx.get(url, headers=headers, params={"last_event_id": "-1"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "last_event_id"
    assert httpx.get(url).status_code == 401
    intruder = httpx.get(url, headers={"Authorization": f"Bearer {make_key('stream-intruder')}"})
    assert intruder.status_code == 404 and intruder.json()["error"]["code"] == "not_found"


def test_open_streams_hold_no_connection_and_leave_the_server_responsive(
    live_server, client_factory, make_key, tiny_model: str, database_url: str
) -> None:
    url = live_server(sse_poll_interval_s=0.05, sse_heartbeat_s=0.5, sse_max_duration_s=8)
    key = make_key("stream-load")
    headers = {"Authorization": f"Bearer {key}"}
    client = client_factory("stream-load")
    client.headers.update(headers)
    job_id = _queued_job(client, tiny_model)
    streams = 60  # more than the database pool (10 + 30 overflow) and the thread pool (40)
    opened = threading.Barrier(streams + 1, timeout=60)

    def hold() -> int:
        record = Stream()
        with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events/stream", headers=headers, timeout=60) as r:
            for _ in messages(r, record):
                opened.wait()  # the first event; after it only heartbeats come, which messages() skips
        return len(record.messages)

    admin = create_engine(database_url)
    try:
        with concurrent.futures.ThreadPoolExecutor(streams) as pool:
            futures = [pool.submit(hold) for _ in range(streams)]
            opened.wait()  # every stream has delivered its first event and keeps polling
            latencies, in_transaction = [], []
            for _ in range(5):
                started = time.monotonic()
                assert httpx.get(f"{url}/v1/jobs/{job_id}", headers=headers, timeout=10).status_code == 200
                latencies.append(time.monotonic() - started)
                with admin.connect() as connection:
                    in_transaction.append(
                        connection.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                "AND state = 'idle in transaction' AND now() - state_change > interval '1 second'"
                            )
                        ).scalar_one()
                    )
            assert all(f.result(timeout=90) == 1 for f in futures)
    finally:
        admin.dispose()
    # A stream that kept its session between polls would leave a connection idle in a transaction each
    # (a poll's own transaction lasts milliseconds).
    assert max(in_transaction) == 0, in_transaction
    assert max(latencies) < 2.0, latencies
