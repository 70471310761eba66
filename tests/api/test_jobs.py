"""The jobs API against real PostgreSQL, Redis and moto S3 (no worker consumes this session's queue here)."""

from __future__ import annotations

import concurrent.futures
import copy

import pytest

pytestmark = pytest.mark.services


@pytest.fixture
def body(tiny_model: str) -> dict:
    return {
        "model": {"id": tiny_model},
        "calibration": {"name": "wikitext2"},
        "samples": 4,
        "seq_len": 32,
        "objective": "perplexity",
        "sparsities": [0.2, 0.4],
        "steps": 4,
    }


def test_openapi_is_published(client_factory) -> None:
    client = client_factory("openapi")
    schema = client.get("/v1/openapi.json").json()
    assert "/v1/jobs" in schema["paths"]
    assert "/v1/jobs/{job_id}/checkpoints/{sparsity}" in schema["paths"]
    assert "JobSpec" in schema["components"]["schemas"]


def test_submit_poll_list(client_factory, body: dict) -> None:
    client = client_factory("alpha")
    created = client.post("/v1/jobs", json=body)
    assert created.status_code == 201, created.text
    job = created.json()
    assert job["status"] == "queued"
    assert job["request"]["sparsities"] == [0.2, 0.4]
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"

    fetched = client.get(f"/v1/jobs/{job['id']}").json()
    assert fetched["id"] == job["id"]
    assert fetched["progress"] == {
        "phase": "queued",
        "phase_done": None,
        "phase_total": None,
        "step": 0,
        "total_steps": None,
        "current_sparsity": None,
        "calibration_loss": None,
        "eta_seconds": None,
    }
    listed = client.get("/v1/jobs", params={"status": "queued"}).json()
    assert job["id"] in [j["id"] for j in listed["data"]]
    assert client.get("/v1/jobs", params={"status": "succeeded"}).json()["data"] == []

    events = client.get(f"/v1/jobs/{job['id']}/events").json()
    assert events["data"][0]["kind"] == "state"
    assert events["data"][0]["data"]["status"] == "queued"


def test_cursor_pagination(client_factory, body: dict) -> None:
    client = client_factory("pager")
    ids = {client.post("/v1/jobs", json=body).json()["id"] for _ in range(5)}
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == 5
    assert set(seen) == ids
    bad = client.get("/v1/jobs", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "cursor"


def test_idempotency_key(client_factory, body: dict) -> None:
    client = client_factory("idem")
    headers = {"Idempotency-Key": "submit-1"}
    first = client.post("/v1/jobs", json=body, headers=headers)
    again = client.post("/v1/jobs", json=body, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]

    changed = copy.deepcopy(body) | {"sparsities": [0.3]}
    conflict = client.post("/v1/jobs", json=changed, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert conflict.json()["error"]["field"] == "Idempotency-Key"

    # Another tenant may use the same key for its own job.
    other = client_factory("idem-other").post("/v1/jobs", json=body, headers=headers)
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert len(client.get("/v1/jobs").json()["data"]) == 1


def test_idempotency_key_under_concurrency(client_factory, body: dict) -> None:
    client = client_factory("idem-race")
    headers = {"Idempotency-Key": "race"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.post("/v1/jobs", json=body, headers=headers), range(8)))
    assert sorted(a.status_code for a in answers).count(201) == 1
    assert {a.json()["id"] for a in answers} == {answers[0].json()["id"]}
    assert len(client.get("/v1/jobs").json()["data"]) == 1


def test_cancel_queued_job(client_factory, body: dict) -> None:
    client = client_factory("canceller")
    job = client.post("/v1/jobs", json=body).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
    kinds = [e["data"].get("status") for e in client.get(f"/v1/jobs/{job['id']}/events").json()["data"]]
    assert kinds == ["queued", "cancelled"]


def test_tenant_isolation(client_factory, body: dict) -> None:
    owner = client_factory("owner")
    intruder = client_factory("intruder")
    job_id = owner.post("/v1/jobs", json=body).json()["id"]
    for method, path in [
        ("GET", f"/v1/jobs/{job_id}"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints/0.2"),
        ("GET", f"/v1/jobs/{job_id}/report"),
    ]:
        answer = intruder.request(method, path)
        assert answer.status_code == 404, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    assert job_id not in [j["id"] for j in intruder.get("/v1/jobs").json()["data"]]
    assert owner.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_authentication(client_factory, app, make_key, service_settings) -> None:
    from fastapi.testclient import TestClient

    from core.db.session import session_scope
    from core.jobs.tenants import revoke_api_key

    anonymous = TestClient(app)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        answer = anonymous.get("/v1/jobs", headers=headers)
        assert answer.status_code == 401
        assert answer.json()["error"]["code"] == "unauthorized"
        assert answer.headers["www-authenticate"] == "Bearer"
    key = make_key("revoked")
    assert anonymous.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with session_scope(service_settings) as session:
        assert revoke_api_key(session=session, key=key)
    assert anonymous.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_unknown_routes_and_methods_answer_json(client_factory) -> None:
    client = client_factory("lost")
    for method, path, code in [
        ("GET", "/v1/nope", 404),
        ("GET", "/v1/jobs/job_doesnotexist", 404),
        ("DELETE", "/v1/jobs", 405),
    ]:
        answer = client.request(method, path)
        assert answer.status_code == code
        assert set(answer.json()["error"]) == {"code", "message", "field"}


def test_checkpoints_of_a_queued_job(client_factory, body: dict) -> None:
    client = client_factory("ckpt")
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    listing = client.get(f"/v1/jobs/{job_id}/checkpoints").json()
    assert listing == {"data": [], "reached_sparsities": [], "trajectory_range": None}
    not_reached = client.get(f"/v1/jobs/{job_id}/checkpoints/0.2")
    assert not_reached.status_code == 409
    assert not_reached.json()["error"]["code"] == "sparsity_not_reached"
    for bad in ["abc", "1.5", "0", "-0.2", "0.1.2"]:
        answer = client.get(f"/v1/jobs/{job_id}/checkpoints/{bad}")
        assert answer.status_code == 422, bad
        assert answer.json()["error"]["field"] == "sparsity"
    report = client.get(f"/v1/jobs/{job_id}/report")
    assert report.status_code == 404
    assert report.json()["error"]["code"] == "report_not_ready"


def test_health_readiness_metrics(client_factory) -> None:
    client = client_factory("ops")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "broker": "ok", "storage": "ok"}
    client.get("/v1/jobs")
    metrics = client.get("/metrics").text
    assert 'gisp_http_requests_total{method="GET",route="/v1/jobs",status="200"}' in metrics
    assert "gisp_jobs{" in metrics


def test_broker_down_answers_503_keeps_the_job_queued_and_a_replay_sends_it(
    service_settings, make_key, tiny_model: str
) -> None:
    """The job row is committed before its message is sent: a 503 leaves it queued (never failed), and a
    retry with the same Idempotency-Key returns it and sends it once the broker answers."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.conftest import free_port

    key = make_key("no-broker")
    down = service_settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{free_port()}/0"})
    client = TestClient(create_app(down), headers={"Authorization": f"Bearer {key}"})
    body = {"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2]}
    answer = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
    assert answer.status_code == 503 and answer.headers["retry-after"]
    assert answer.json()["error"]["code"] == "broker_unavailable"
    (job,) = client.get("/v1/jobs").json()["data"]
    assert job["status"] == "queued" and job["error"] is None
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"].startswith("unavailable")

    up = TestClient(create_app(service_settings), headers={"Authorization": f"Bearer {key}"})
    replay = up.post("/v1/jobs", json=body, headers={"Idempotency-Key": "retry-me"})
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == job["id"] and replay.json()["status"] == "queued"
    assert _enqueued_at(service_settings, job["id"]) is not None  # the replay handed it to the broker


def _enqueued_at(service_settings, job_id: str):  # type: ignore[no-untyped-def]
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(service_settings) as session:
        return session.get(Job, job_id).enqueued_at


def test_bias_compensation_is_refused_where_the_method_cannot_use_it(client_factory, body: dict) -> None:
    client = client_factory("compensation")
    one_shot = {key: value for key, value in body.items() if key != "steps"}
    refused = client.post("/v1/jobs", json=one_shot | {"method": "wanda-sp", "bias_compensation": True})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "bias_compensation"
    assert "gisp" in refused.json()["error"]["message"]
    accepted = client.post("/v1/jobs", json=body | {"bias_compensation": False})
    assert accepted.status_code == 201, accepted.text


def test_reconstruction_is_a_job_option_validated_at_the_boundary(client_factory, body: dict) -> None:
    client = client_factory("reconstruction")
    refused = client.post("/v1/jobs", json=body | {"reconstruction": "sometimes"})
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["field"] == "reconstruction"
    accepted = client.post("/v1/jobs", json=body | {"reconstruction": False})
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["request"]["reconstruction"] is False
