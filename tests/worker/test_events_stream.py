"""Live events over SSE while a real Celery worker runs a job, then the curve, a selection and its download."""

from __future__ import annotations

import io
import tarfile

import httpx
import pytest

from tests.curve_seed import curve_from_report, read_report, write_curve
from tests.sse_reader import Stream, messages
from tests.worker.conftest import stored_trajectory, wait_for_job

pytestmark = pytest.mark.services

TERMINAL = {"succeeded", "failed", "cancelled"}


def _all_events(client: httpx.Client, job_id: str) -> list[dict]:
    events, cursor = [], None
    while True:
        page = client.get(
            f"/v1/jobs/{job_id}/events", params={"limit": 5} | ({"cursor": cursor} if cursor else {})
        )
        events += page.json()["data"]
        cursor = page.json()["next_cursor"]
        if not cursor:
            return events


def test_stream_follows_a_running_job_and_resumes_exactly(
    worker, live_server, client_factory, make_key, tiny_model: str
) -> None:
    url = live_server(sse_poll_interval_s=0.05, sse_heartbeat_s=0.5)
    key = make_key("sse-worker")
    headers = {"Authorization": f"Bearer {key}"}
    client = client_factory("sse-worker")
    client.headers.update(headers)
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 2,
        "seq_len": 16,
        "sparsities": [0.3],
        "steps": 6,
    }
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    stream_url = f"{url}/v1/jobs/{job_id}/events/stream"

    first: list[dict] = []
    with httpx.stream("GET", stream_url, headers=headers, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for message in messages(response, Stream()):
            event = message.json
            assert message.id == str(event["id"]) and message.event == event["kind"]
            first.append(event)
            if sum(e["kind"] == "step" for e in first) == 2:
                break  # drop the connection mid-run
    # The events came live: the job was still running when the second step arrived.
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] not in TERMINAL

    record = Stream()
    with httpx.stream(
        "GET", stream_url, headers=headers | {"Last-Event-ID": str(first[-1]["id"])}, timeout=120
    ) as response:
        rest = [m.json for m in messages(response, record)]  # ends when the server closes the stream

    assert rest and rest[-1]["kind"] == "state" and rest[-1]["data"]["status"] == "succeeded"
    assert not any(e["kind"] == "state" and e["data"]["status"] in TERMINAL for e in first + rest[:-1])
    stored = _all_events(client, job_id)
    upto = next(i for i, e in enumerate(stored) if e["id"] == rest[-1]["id"])
    # Exactly the missing events, in order: the two streams together are the stored events, each once.
    assert [e["id"] for e in first + rest] == [e["id"] for e in stored[: upto + 1]]
    assert [e["kind"] for e in first + rest] == [e["kind"] for e in stored[: upto + 1]]
    assert [e["data"] for e in first + rest] == [e["data"] for e in stored[: upto + 1]]
    steps = [e["data"]["step"] for e in first + rest if e["kind"] == "step"]
    assert steps == list(range(1, 7))
    # Heartbeats kept the connection alive between the slowed-down steps (0.4 s apart, heartbeat 0.5 s).
    assert record.retry is not None


def _members(archive: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames()}


def test_layers_curve_selection_and_download_of_a_real_run(
    worker, client_factory, tiny_model: str, service_settings
) -> None:
    from core.engine.trajectory import Trajectory

    client = client_factory("select-worker")
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 2,
        "seq_len": 16,
        "sparsities": [0.2, 0.4],
        "steps": 4,
        "evaluations": ["perplexity"],
    }
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    done = wait_for_job(client, job_id, lambda j: j["status"] in TERMINAL)
    assert done["status"] == "succeeded", done

    # Per-layer sizes: the manifest of a ready checkpoint, and the trajectory replayed between targets, both
    # against the engine's own replay of the stored trajectory.
    trajectory = Trajectory.from_dict(stored_trajectory(service_settings, job_id))
    target = client.get(f"/v1/jobs/{job_id}/layers", params={"sparsity": 0.4}).json()
    assert target["source"] == "manifest"
    assert [dict(x) for x in target["layers"]] == trajectory.state_at(0.4).counts()
    first_step = trajectory.steps[0].sparsity
    between = client.get(f"/v1/jobs/{job_id}/layers", params={"sparsity": f"{first_step:.4f}"}).json()
    assert between["source"] == "trajectory"
    assert [dict(x) for x in between["layers"]] == trajectory.state_after_steps(1).counts()
    assert between["dense"] == {
        "heads": trajectory.geometry.num_heads,
        "kv_heads": trajectory.geometry.num_kv_heads,
        "channels": trajectory.geometry.intermediate_size,
    }

    # The curve from the report's own evaluation, plus a point the run passed but did not materialise.
    report = read_report(service_settings, job_id)
    assert report is not None
    curve = curve_from_report(report)
    assert [p["label"] for p in curve["points"]] == ["0.2000", "0.4000"]
    extra = {**curve["points"][0], "sparsity": first_step, "label": f"{first_step:.4f}"}
    extra["perplexity"] = min(p["perplexity"] for p in curve["points"]) / 2  # the best point, if it were
    curve["points"].append(extra)
    write_curve(service_settings, job_id, curve)
    assert len(client.get(f"/v1/jobs/{job_id}/curve").json()["points"]) == 3

    loosest = max(p["perplexity"] for p in curve["points"]) * 1.01
    chosen = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": loosest}).json()
    assert chosen["label"] == "0.4000"  # every point qualifies: the most pruned
    archive = client.get(chosen["download_url"])
    assert archive.status_code == 200 and "model.safetensors" in _members(archive.content)

    tight = extra["perplexity"] * 1.001
    chosen = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": tight}).json()
    assert chosen["label"] == f"{first_step:.4f}"  # only the fabricated point meets it
    pending = client.get(chosen["download_url"])
    assert pending.status_code == 202  # materialised on demand
    ready = wait_for_job(
        client,
        job_id,
        lambda j: any(c["label"] == chosen["label"] and c["status"] == "ready" for c in j["checkpoints"]),
    )
    assert ready["status"] == "succeeded"
    archive = client.get(chosen["download_url"])
    assert archive.status_code == 200 and "gisp_manifest.json" in _members(archive.content)
    now_manifest = client.get(f"/v1/jobs/{job_id}/layers", params={"sparsity": chosen["label"]}).json()
    assert now_manifest["source"] == "manifest"
    assert now_manifest["layers"] == between["layers"]  # the replay matched the checkpoint the worker built
