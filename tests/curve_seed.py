"""Writing a curve into a job's report.json through the Storage API, as the worker's report step would.

The worker side that computes the curve is not there yet; these helpers follow the contract the API reads
(``"curve": {"dense": POINT, "points": [POINT, ...]}``, see core.schemas.curve).
"""

from __future__ import annotations

import json
from typing import Any

from core.settings import Settings


def job_tenant(settings: Settings, job_id: str) -> str:
    from core.db.models import Job
    from core.db.session import session_scope

    with session_scope(settings) as session:
        job = session.get(Job, job_id)
        assert job is not None, job_id
        return job.tenant_id


def _report_row(settings: Settings, job_id: str) -> str | None:
    from core.db.session import session_scope
    from core.jobs.fencing import artifact_key

    with session_scope(settings) as session:
        return artifact_key(session=session, job_id=job_id, kind="report", name="report.json")


def read_report(settings: Settings, job_id: str) -> dict[str, Any] | None:
    from core.storage import get_storage

    key = _report_row(settings, job_id)
    return None if key is None else json.loads(get_storage(settings).get_bytes(key))


def write_curve(settings: Settings, job_id: str, curve: dict[str, Any] | None) -> None:
    """Add (or with None, remove) the curve of the job's report, keeping whatever else the report holds.

    Written as a worker would: a new object, and the job's report row pointed at it.
    """
    from sqlalchemy import select

    from core.db.models import Artifact
    from core.db.session import session_scope
    from core.storage import get_storage, job_prefix

    report = read_report(settings, job_id) or {}
    if curve is None:
        report.pop("curve", None)
    else:
        report["curve"] = curve
    key = f"{job_prefix(job_tenant(settings, job_id), job_id)}/report/seeded/report.json"
    stored = get_storage(settings).put_bytes(
        key, json.dumps(report).encode(), content_type="application/json"
    )
    with session_scope(settings) as session:
        row = session.scalar(
            select(Artifact).where(
                Artifact.job_id == job_id, Artifact.kind == "report", Artifact.name == "report.json"
            )
        )
        if row is None:
            row = Artifact(job_id=job_id, kind="report", name="report.json")
            session.add(row)
        row.key, row.sha256, row.size_bytes = stored.key, stored.sha256, stored.size


def curve_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """A curve made of the report's own numbers: each evaluated model's perplexity (and mean accuracy where
    multiple-choice tasks ran) with the parameter count its trajectory step recorded."""
    steps = report["trajectory"]["steps"]
    dense_parameters = report["trajectory"]["dense_parameters"]

    def parameters_at(sparsity: float) -> int:
        reached = [s for s in steps if s["sparsity"] >= sparsity - 5e-5]
        return int(reached[0]["parameters"] if reached else steps[-1]["parameters"])

    def point(result: dict[str, Any]) -> dict[str, Any]:
        sparsity = float(result["sparsity"])
        metrics = result.get("metrics", {})
        perplexity = (metrics.get("perplexity") or {}).get("perplexity")
        label = "dense" if sparsity == 0 else f"{sparsity:.4f}"
        return {
            "sparsity": sparsity,
            "label": label,
            "parameters": dense_parameters if sparsity == 0 else parameters_at(sparsity),
            "perplexity": perplexity,
            "accuracy": (metrics.get("mean_accuracy") or {}).get("acc"),
        }

    results = report["evaluation"]["results"]
    return {"dense": point(results[0]), "points": [point(r) for r in results[1:]]}
