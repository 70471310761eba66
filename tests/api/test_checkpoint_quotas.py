"""On-demand checkpoints: labels that stay valid links, and quotas per job and per tenant (429).

No worker consumes this session's queue, so an on-demand checkpoint stays pending until a test marks it
ready in the database, which is what a worker's materialisation would do.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

pytestmark = pytest.mark.services

BODY = {
    "model": {"id": "local/tiny"},
    "calibration": {"name": "wikitext2"},
    "samples": 4,
    "seq_len": 32,
    "sparsities": [0.5],
    "steps": 10,
}
REACHED = [round(0.05 * i, 2) for i in range(1, 11)]  # what ten steps up to 0.5 would have recorded


@pytest.fixture(scope="module")
def quota_client(service_settings, make_key, tiny_model: str) -> Callable[[str], httpx.Client]:  # type: ignore[no-untyped-def]
    """Clients of an app with small quotas: 3 on-demand checkpoints per job, 2 building per tenant."""
    from api.main import create_app

    app = create_app(
        service_settings.model_copy(
            update={"max_checkpoints_per_job": 3, "max_concurrent_materializations": 2}
        )
    )
    clients: list[TestClient] = []

    def make(tenant: str) -> httpx.Client:
        client = TestClient(app, raise_server_exceptions=False)
        client.headers["Authorization"] = f"Bearer {make_key(tenant)}"
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _job_that_reached(client: httpx.Client, service_settings) -> str:  # type: ignore[no-untyped-def]
    from core.db.models import Job
    from core.db.session import session_scope

    answer = client.post("/v1/jobs", json=BODY)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    with session_scope(service_settings) as session:
        session.execute(update(Job).where(Job.id == job_id).values(reached_sparsities=REACHED))
    return job_id


def _mark_ready(service_settings, job_id: str) -> None:  # type: ignore[no-untyped-def]
    from core.db.models import Checkpoint
    from core.db.session import session_scope

    with session_scope(service_settings) as session:
        session.execute(update(Checkpoint).where(Checkpoint.job_id == job_id).values(status="ready"))


def test_sparsity_finer_than_the_label_is_refused(quota_client, service_settings) -> None:  # type: ignore[no-untyped-def]
    client = quota_client("labels")
    job_id = _job_that_reached(client, service_settings)
    for text in ["0.00001", "0.12345", "0.0000", "0.1%0A"]:
        answer = client.get(f"/v1/jobs/{job_id}/checkpoints/{text}")
        assert answer.status_code == 422, (text, answer.text)
        assert answer.json()["error"]["field"] == "sparsity"
    assert client.get(f"/v1/jobs/{job_id}/checkpoints/0.1").status_code == 202
    # Every checkpoint the job lists is reachable through its own link (never a label that reads as 0).
    listed = client.get(f"/v1/jobs/{job_id}/checkpoints").json()["data"]
    assert [c["label"] for c in listed] == ["0.1000"]
    for checkpoint in listed:
        assert client.get(checkpoint["download_url"]).status_code == 202


def test_concurrent_materialisations_per_tenant(quota_client, service_settings) -> None:  # type: ignore[no-untyped-def]
    client = quota_client("busy")
    first, second = _job_that_reached(client, service_settings), _job_that_reached(client, service_settings)
    assert client.get(f"/v1/jobs/{first}/checkpoints/0.1").status_code == 202
    assert client.get(f"/v1/jobs/{second}/checkpoints/0.1").status_code == 202
    busy = client.get(f"/v1/jobs/{second}/checkpoints/0.2")
    assert busy.status_code == 429, busy.text
    assert int(busy.headers["retry-after"]) > 0
    assert busy.json()["error"] | {"message": None} == {
        "code": "too_many_materializations",
        "message": None,
        "field": "sparsity",
    }
    # Asking again for one already pending is not a new materialisation: still 202.
    assert client.get(f"/v1/jobs/{first}/checkpoints/0.1").status_code == 202
    # Another tenant is not held back by this one.
    other = quota_client("busy-neighbour")
    assert client.get(f"/v1/jobs/{second}/checkpoints/0.2").status_code == 429
    assert (
        other.get(f"/v1/jobs/{_job_that_reached(other, service_settings)}/checkpoints/0.2").status_code == 202
    )
    _mark_ready(service_settings, first)
    assert client.get(f"/v1/jobs/{second}/checkpoints/0.2").status_code == 202


def test_on_demand_checkpoints_per_job(quota_client, service_settings) -> None:  # type: ignore[no-untyped-def]
    client = quota_client("many")
    job_id = _job_that_reached(client, service_settings)
    for sparsity in ["0.1", "0.15", "0.2"]:
        assert client.get(f"/v1/jobs/{job_id}/checkpoints/{sparsity}").status_code == 202
        _mark_ready(service_settings, job_id)  # built: the concurrency quota is not what stops the fourth
    refused = client.get(f"/v1/jobs/{job_id}/checkpoints/0.25")
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "checkpoint_quota_exceeded"
    assert "retry-after" not in refused.headers  # permanent for this job: waiting does not help
    # The target and the checkpoints already built stay downloadable.
    ready = client.get(f"/v1/jobs/{job_id}/checkpoints/0.15")
    assert ready.status_code == 200, ready.text
