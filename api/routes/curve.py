"""A finished job's quality/size curve, choosing a point on it by constraint, and per-layer sizes."""

from __future__ import annotations

import json
import logging
import math
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.orm import Session

from api.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from api.errors import APIError
from api.params import JobId
from api.routes.jobs import ERRORS, load_job
from api.verification import figures, verified_selection
from core.db.models import Job
from core.jobs import crud, fencing
from core.jobs.layers import BeyondTrajectory, counts_after, counts_from_manifest, dense_counts, step_for
from core.jobs.selection import BOUNDS, NoBounds, NoPointQualifies, select_point
from core.jobs.states import CheckpointStatus, sparsity_label
from core.schemas.curve import (
    Curve,
    LayerCounts,
    LayersPublic,
    SelectionBounds,
    SelectionPublic,
    VerificationPending,
)
from core.schemas.errors import ErrorBody
from core.storage import ObjectNotFound, Storage, StorageError

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/jobs/{job_id}", tags=["selection"])
MANIFEST = "gisp_manifest.json"
NOT_READY: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such job, or its report has no curve yet"}
}


def _json_object(storage: Storage, key: str | None) -> dict[str, Any] | None:
    if key is None:
        return None
    try:
        data = json.loads(storage.get_bytes(key))
    except ObjectNotFound:
        return None
    except StorageError:
        raise APIError(503, "storage_unavailable", "object storage is unreachable; try again") from None
    return data if isinstance(data, dict) else None


def _artifact(session: Session, storage: Storage, job: Job, kind: str, name: str) -> dict[str, Any] | None:
    """A JSON artifact of the job, through the row that points at its current object."""
    return _json_object(storage, fencing.artifact_key(session=session, job_id=job.id, kind=kind, name=name))


def load_curve(session: Session, storage: Storage, job: Job) -> Curve:
    """The curve in the job's report.json, or 404 curve_not_ready."""
    report = _artifact(session, storage, job, "report", "report.json")
    raw = (report or {}).get("curve")
    if not raw:
        detail = "the job has no report yet" if report is None else "the job's report has no curve"
        raise APIError(404, "curve_not_ready", detail)
    try:
        return Curve.model_validate(raw)
    except ValidationError as error:
        logger.error("job %s: malformed curve in its report: %s", job.id, error)
        raise APIError(500, "invalid_curve", "the job's report holds a malformed curve") from None


@router.get("/curve", response_model=Curve, responses={**ERRORS, **NOT_READY})
def get_curve(job_id: JobId, session: SessionDep, storage: StorageDep, tenant: CurrentTenant) -> Curve:
    """Perplexity, accuracy, latency and size of the dense model and every evaluated checkpoint."""
    return load_curve(session, storage, load_job(session, tenant.id, job_id))


def _bounds(values: dict[str, float | None]) -> SelectionBounds:
    for name, value in values.items():
        if value is not None and not (math.isfinite(value) and value > 0):
            raise APIError(422, "validation_error", "must be a finite number above 0", field=name)
    if all(value is None for value in values.values()):
        names = ", ".join(b.name for b in BOUNDS)
        raise APIError(422, "validation_error", f"give at least one bound: {names}", field="max_perplexity")
    return SelectionBounds(**values)


BoundQuery = Annotated[float | None, Query()]


@router.get(
    "/select",
    response_model=SelectionPublic,
    responses={
        **ERRORS,
        **NOT_READY,
        202: {
            "model": VerificationPending,
            "description": "verify=true: a worker is re-measuring; poll again",
        },
        409: {
            "model": ErrorBody,
            "description": "no_point_qualifies (the message names the closest point); with verify=true, "
            "no_point_verified (every candidate missed a bound once re-measured) or verify_unavailable",
        },
        503: {"model": ErrorBody, "description": "broker_unavailable (verify=true): stored, sent later"},
    },
)
def select(
    job_id: JobId,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: CurrentTenant,
    max_perplexity: BoundQuery = None,
    max_latency_ms: BoundQuery = None,
    min_accuracy_ratio: BoundQuery = None,
    max_params: BoundQuery = None,
    verify: Annotated[
        bool,
        Query(
            description="re-measure the chosen checkpoint (after the refit) on a worker and step back "
            "until the re-measured figures meet the bounds (202 until the worker has answered)"
        ),
    ] = False,
) -> SelectionPublic | JSONResponse:
    """The checkpoint that meets the bounds: quality bounds alone pick the most pruned point meeting them;
    a size or latency bound picks the least pruned point within every bound."""
    bounds = _bounds(
        {
            "max_perplexity": max_perplexity,
            "max_latency_ms": max_latency_ms,
            "min_accuracy_ratio": min_accuracy_ratio,
            "max_params": max_params,
        }
    )
    job = load_job(session, tenant.id, job_id)
    curve = load_curve(session, storage, job)
    try:
        chosen = select_point(curve, bounds)
    except NoBounds as error:  # already refused above; kept so the two checks cannot drift apart silently
        raise APIError(422, "validation_error", str(error), field="max_perplexity") from None
    except NoPointQualifies as error:
        missed = error.violations
        worst = max(missed, key=missed.__getitem__) if missed else None
        raise APIError(409, "no_point_qualifies", str(error), field=worst) from None
    if verify:
        return verified_selection(
            session=session, settings=settings, job=job, curve=curve, bounds=bounds, chosen=chosen
        )
    point = chosen.point
    label = sparsity_label(point.sparsity)
    return SelectionPublic(
        sparsity=point.sparsity,
        label=label,
        figures=figures(point, curve.dense),
        rule=chosen.rule,
        bounds=bounds,
        download_url=f"/v1/jobs/{job.id}/checkpoints/{label}",
    )


@router.get(
    "/layers",
    response_model=LayersPublic,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "sparsity beyond the trajectory"}},
)
def layers(
    job_id: JobId,
    session: SessionDep,
    storage: StorageDep,
    tenant: CurrentTenant,
    sparsity: Annotated[float, Query(ge=0.0, lt=1.0)],
) -> LayersPublic:
    """Heads, KV heads and MLP channels per layer at a sparsity: the checkpoint's manifest where it is
    materialised, else the trajectory replayed to the first step that reaches the sparsity."""
    job = load_job(session, tenant.id, job_id)
    trajectory = _artifact(session, storage, job, "trajectory", "trajectory.json")
    if trajectory is None:
        raise APIError(404, "trajectory_not_ready", "the job has not recorded a step yet")
    dense = LayerCounts(**dense_counts(trajectory).as_dict())
    checkpoint = crud.get_checkpoint(session=session, job_id=job.id, sparsity=sparsity) if sparsity else None
    if checkpoint is not None and checkpoint.status == CheckpointStatus.ready.value:
        manifest = next((a for a in checkpoint.artifacts if a.name == MANIFEST), None)
        data = _json_object(storage, manifest.key) if manifest is not None else None
        if data is not None and "layers" in data:
            counts = counts_from_manifest(data)
            return LayersPublic(
                sparsity=float(data.get("sparsity", checkpoint.sparsity)),
                label=checkpoint.label,
                source="manifest",
                layout=checkpoint.layout,
                layers=[LayerCounts(**c.as_dict()) for c in counts],
                dense=dense,
            )
    try:
        steps = step_for(trajectory, sparsity)
    except BeyondTrajectory as error:
        raise APIError(409, "sparsity_not_reached", str(error), field="sparsity") from None
    reached = float(trajectory["steps"][steps - 1]["sparsity"]) if steps else 0.0
    return LayersPublic(
        sparsity=reached,
        label=sparsity_label(reached) if steps else "dense",
        source="trajectory",
        layout="nonuniform",
        layers=[LayerCounts(**c.as_dict()) for c in counts_after(trajectory, steps)],
        dense=dense,
    )
