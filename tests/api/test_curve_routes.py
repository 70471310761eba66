"""/curve and /select against the real services, with a report.json written through the Storage API."""

from __future__ import annotations

import pytest

from tests.curve_seed import write_curve

pytestmark = pytest.mark.services

CURVE = {
    "dense": {"sparsity": 0.0, "label": "dense", "parameters": 1000, "perplexity": 10.0, "accuracy": 0.6},
    "points": [
        {
            "sparsity": 0.1,
            "label": "0.1000",
            "parameters": 900,
            "perplexity": 12.0,
            "latency_ms": 9.0,
            "accuracy": 0.58,
        },
        {
            "sparsity": 0.2,
            "label": "0.2000",
            "parameters": 800,
            "perplexity": 15.0,
            "latency_ms": 8.0,
            "accuracy": 0.55,
        },
        {
            "sparsity": 0.3,
            "label": "0.3000",
            "parameters": 700,
            "perplexity": 21.0,
            "latency_ms": 7.0,
            "accuracy": 0.50,
        },
        {
            "sparsity": 0.4,
            "label": "0.4000",
            "parameters": 600,
            "perplexity": 40.0,
            "latency_ms": 6.0,
            "accuracy": 0.42,
        },
    ],
}


@pytest.fixture
def job(client_factory, tiny_model: str, service_settings):  # type: ignore[no-untyped-def]
    client = client_factory("curve-owner")
    body = {"model": tiny_model, "calibration": {"name": "wikitext2"}, "sparsities": [0.2], "steps": 2}
    job_id = client.post("/v1/jobs", json=body).json()["id"]
    return client, job_id


def test_curve_not_ready_then_served(job, service_settings) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job
    missing = client.get(f"/v1/jobs/{job_id}/curve")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "curve_not_ready"
    assert client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": 30}).json()["error"]["code"] == (
        "curve_not_ready"
    )
    write_curve(service_settings, job_id, None)  # a report without a curve
    assert (
        client.get(f"/v1/jobs/{job_id}/curve").json()["error"]["message"] == "the job's report has no curve"
    )
    write_curve(service_settings, job_id, CURVE)
    served = client.get(f"/v1/jobs/{job_id}/curve").json()
    assert [p["sparsity"] for p in served["points"]] == [0.1, 0.2, 0.3, 0.4]
    assert served["dense"]["perplexity"] == 10.0


def test_select_follows_the_rule(job, service_settings) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job
    write_curve(service_settings, job_id, CURVE)

    def pick(**bounds: float) -> dict:
        answer = client.get(f"/v1/jobs/{job_id}/select", params=bounds)
        assert answer.status_code == 200, answer.text
        return answer.json()

    quality = pick(max_perplexity=25)  # most pruned with perplexity <= 25: 0.3
    assert (quality["sparsity"], quality["label"]) == (0.3, "0.3000")
    assert quality["figures"]["perplexity"] == 21.0 and quality["figures"]["parameters"] == 700
    assert quality["figures"]["accuracy_ratio"] == pytest.approx(0.50 / 0.6)
    assert quality["download_url"] == f"/v1/jobs/{job_id}/checkpoints/0.3000"
    assert "most pruned" in quality["rule"]
    assert pick(max_params=750)["label"] == "0.3000"  # least pruned within 750 parameters
    assert pick(max_perplexity=30, max_latency_ms=8)["label"] == "0.2000"  # least pruned feasible
    assert pick(min_accuracy_ratio=0.9)["label"] == "0.2000"  # 0.55/0.6 = 0.917; 0.50/0.6 = 0.833

    none = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": 11, "max_params": 10_000})
    assert none.status_code == 409
    error = none.json()["error"]
    assert error["code"] == "no_point_qualifies" and error["field"] == "max_perplexity"
    assert "0.1000" in error["message"]  # the closest: perplexity 12 misses 11 by 9 %


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "max_perplexity"),
        ({"max_perplexity": "abc"}, "max_perplexity"),
        ({"max_perplexity": "nan"}, "max_perplexity"),
        ({"max_params": "inf"}, "max_params"),
        ({"max_latency_ms": "-3"}, "max_latency_ms"),
        ({"min_accuracy_ratio": "0"}, "min_accuracy_ratio"),
        ({"max_perplexity": "20", "max_params": "-1"}, "max_params"),
    ],
)
def test_bad_bounds_are_422_naming_the_parameter(job, params: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job
    answer = client.get(f"/v1/jobs/{job_id}/select", params=params)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


def test_curve_and_select_are_tenant_isolated(job, client_factory, service_settings) -> None:  # type: ignore[no-untyped-def]
    _, job_id = job
    write_curve(service_settings, job_id, CURVE)
    intruder = client_factory("curve-intruder")
    for path in ("curve", "select?max_perplexity=30", "layers?sparsity=0.2"):
        answer = intruder.get(f"/v1/jobs/{job_id}/{path}")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found", path


def test_a_malformed_curve_is_reported_not_crashed(job, service_settings) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job
    write_curve(service_settings, job_id, {"dense": {"sparsity": 0}, "points": "x"})
    answer = client.get(f"/v1/jobs/{job_id}/curve")
    assert answer.status_code == 500 and answer.json()["error"]["code"] == "invalid_curve"


def test_layers_need_a_trajectory(job) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job
    answer = client.get(f"/v1/jobs/{job_id}/layers", params={"sparsity": 0.2})
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "trajectory_not_ready"
    assert (
        client.get(f"/v1/jobs/{job_id}/layers", params={"sparsity": 1.5}).json()["error"]["field"]
        == "sparsity"
    )


def test_verify_needs_a_job_that_measured_its_curve(job, service_settings) -> None:  # type: ignore[no-untyped-def]
    client, job_id = job  # its spec asks for no curve; the curve here is seeded into its report
    write_curve(service_settings, job_id, CURVE)
    answer = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": 25, "verify": "true"})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"]["code"] == "verify_unavailable"
    assert answer.json()["error"]["field"] == "verify"
    bad = client.get(f"/v1/jobs/{job_id}/select", params={"max_perplexity": 25, "verify": "perhaps"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "verify"
