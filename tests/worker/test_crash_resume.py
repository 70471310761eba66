"""A worker SIGKILLed mid-job: the reaper re-queues the job, a new worker resumes it from the last stored
step, and the final trajectory equals an uninterrupted run's."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.worker.conftest import wait_for_job

pytestmark = pytest.mark.services

BODY_STEPS = 8


def _comparable(trajectory: dict[str, Any]) -> dict[str, Any]:
    """Everything but wall-clock times and library versions."""
    data = dict(trajectory)
    data.pop("versions", None)
    data["steps"] = [{k: v for k, v in step.items() if k != "seconds"} for step in data["steps"]]
    return data


def _uninterrupted(service_settings, body: dict) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from core.engine.pruner import prune
    from core.schemas.jobs import JobSpec
    from worker import engine_runner

    spec = JobSpec.model_validate(body)
    loaded = engine_runner.load(spec.model, service_settings)
    items = engine_runner.calibration_items(
        spec.calibration.name, spec.objective, service_settings, spec.seed
    )
    trajectory = prune(loaded, items, spec, batch_size=service_settings.worker_batch_size)
    return json.loads(trajectory.to_json())


def test_killed_worker_job_resumes_to_the_same_trajectory(
    worker, client_factory, tiny_model: str, service_settings
) -> None:
    from tests.worker.conftest import stored_trajectory

    client = client_factory("crash")
    body = {
        "model": tiny_model,
        "calibration": {"name": "wikitext2"},
        "samples": 4,
        "seq_len": 32,
        "sparsities": [0.2, 0.4],
        "steps": BODY_STEPS,
    }
    job = client.post("/v1/jobs", json=body).json()
    wait_for_job(client, job["id"], lambda j: j["progress"]["step"] >= 3)
    worker.kill()
    at_kill = client.get(f"/v1/jobs/{job['id']}").json()
    assert at_kill["status"] == "running"  # nobody is left to say otherwise: the reaper must notice
    assert at_kill["progress"]["step"] < BODY_STEPS

    worker.start()
    done = wait_for_job(client, job["id"], lambda j: j["status"] in {"succeeded", "failed", "cancelled"})
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert [c["label"] for c in done["checkpoints"]] == ["0.2000", "0.4000"]

    events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 500}).json()["data"]
    states = [e["data"]["status"] for e in events if e["kind"] == "state"]
    assert states == ["queued", "running", "queued", "running", "succeeded"]
    second = [e["data"]["step"] for e in events if e["kind"] == "step" and e["data"]["attempt"] == 2]
    # The second attempt starts right after the last step the first one stored: nothing is recomputed.
    assert second == list(range(second[0], BODY_STEPS + 1))
    assert at_kill["progress"]["step"] < second[0] <= at_kill["progress"]["step"] + 2

    stored = stored_trajectory(service_settings, job["id"])
    reference = _uninterrupted(service_settings, body)
    assert [step["removed"] for step in stored["steps"]] == [step["removed"] for step in reference["steps"]]
    assert _close(_comparable(stored), _comparable(reference))


def _close(a: Any, b: Any) -> bool:
    """Structural equality with float tolerance (pytest.approx does not recurse into nested dicts)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-5, abs=1e-7)
    return a == b
