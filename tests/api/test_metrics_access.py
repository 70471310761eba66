"""/metrics is aggregate (no tenant, key or job in any label) and, with GISP_METRICS_TOKEN, needs its token."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.services

LABELS = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*\{(.*)\} ", re.MULTILINE)
LABEL_NAME = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="')


def test_metrics_carry_no_tenant_or_job(client_factory, service_settings, tiny_model: str) -> None:  # type: ignore[no-untyped-def]
    from core.db.models import Tenant
    from core.db.session import session_scope

    client = client_factory("metrics-tenant")
    job = client.post(
        "/v1/jobs",
        json={"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2},
    ).json()
    client.get(f"/v1/jobs/{job['id']}")
    text = client.get("/metrics").text
    with session_scope(service_settings) as session:
        tenant_ids = [t.id for t in session.query(Tenant).all()]
    assert "gisp_jobs" in text
    for secret in [job["id"], "metrics-tenant", client.headers["Authorization"][7:], *tenant_ids]:
        assert secret not in text
    names = {name for labels in LABELS.findall(text) for name in LABEL_NAME.findall(labels)}
    assert names <= {"method", "route", "status", "le"}, names


def test_metrics_token(service_settings) -> None:  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    from api.main import create_app

    app = create_app(service_settings.model_copy(update={"metrics_token": SecretStr("scrape-me")}))
    with TestClient(app, raise_server_exceptions=False) as client:
        refused = client.get("/metrics")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Basic scrape-me"}).status_code == 401
        answer = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert answer.status_code == 200
        assert "gisp_http_requests_total" in answer.text
