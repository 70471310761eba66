"""Checkpoints (download, materialise on demand) and the evaluation report of a job."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from api.dispatch import enqueue_materialize
from api.errors import APIError
from api.params import JobId
from api.routes.jobs import ERRORS, load_job
from api.serializers import checkpoint_public
from api.tar_stream import Member, TarStream
from core.db.models import Artifact, Job
from core.jobs import crud, fencing
from core.jobs.states import GGUF_TYPES, LAYOUTS, CheckpointStatus, CheckpointVariant, JobStatus
from core.pruning_spec import LABEL_DECIMALS
from core.schemas.errors import ErrorBody
from core.schemas.jobs import (
    CheckpointFile,
    CheckpointFiles,
    CheckpointPending,
    CheckpointsPublic,
    JobSpec,
    SparsityRange,
)
from core.settings import Settings
from core.storage import ObjectNotFound, StorageError

router = APIRouter(prefix="/jobs/{job_id}", tags=["checkpoints"])

_SPARSITY_RE = re.compile(rf"0?\.\d{{1,{LABEL_DECIMALS}}}")
_REPORT_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,100}\.(png|svg|json|csv)")
EPSILON = 1e-6
PRESIGN_SECONDS = 3600


def _parse_sparsity(text: str) -> float:
    """A sparsity as checkpoints are labelled: a finer one would be answered with a coarser checkpoint."""
    if not _SPARSITY_RE.fullmatch(text):
        raise APIError(
            422,
            "validation_error",
            f"sparsity must be a number in (0, 1) with at most {LABEL_DECIMALS} decimals, e.g. 0.5",
            field="sparsity",
        )
    value = float(text)
    if not 0.0 < value < 1.0:
        raise APIError(
            422, "validation_error", "sparsity must lie strictly between 0 and 1", field="sparsity"
        )
    return value


RETRY_BUSY_S = 30


def _check_quotas(session: Session, settings: Settings, tenant_id: str, job_id: str) -> None:
    """429 before a new on-demand checkpoint is created past a quota (each one is a full model to build)."""
    use = crud.on_demand_use(session=session, tenant_id=tenant_id, job_id=job_id)
    if use.of_job >= settings.max_checkpoints_per_job:
        # Permanent for this job (checkpoints are not deleted), so no Retry-After: use one already built.
        raise APIError(
            429,
            "checkpoint_quota_exceeded",
            f"this job already has {use.of_job} on-demand checkpoints, the most this server builds for one "
            "job; download one of them (GET /checkpoints lists them)",
            field="sparsity",
        )
    if use.building >= settings.max_concurrent_materializations:
        raise APIError(
            429,
            "too_many_materializations",
            f"{use.building} of your checkpoints are being built, the most at once; ask again when one is ready",
            field="sparsity",
            headers={"Retry-After": str(RETRY_BUSY_S)},
        )


FormatQuery = Annotated[
    str, Query(description="tar: the checkpoint folder as a tar archive; gguf: one GGUF file for llama.cpp")
]
TypeQuery = Annotated[
    str | None, Query(alias="type", description="GGUF weight type: f32, f16 (default) or q8_0")
]
LayoutQuery = Annotated[
    str | None,
    Query(description="nonuniform or uniform; default: the job's layout (the other is built on demand)"),
]


def _variant(job: Job, format: str, gguf_type: str | None, layout: str | None) -> CheckpointVariant:
    """The variant a download asks for, checked; the job's own layout is the default (no variant)."""
    if format not in ("tar", "gguf"):
        raise APIError(422, "validation_error", "format must be tar or gguf", field="format")
    if gguf_type is not None and format != "gguf":
        raise APIError(422, "validation_error", "type applies to format=gguf only", field="type")
    if format == "gguf" and (gguf_type or "f16") not in GGUF_TYPES:
        raise APIError(422, "validation_error", f"type must be one of {', '.join(GGUF_TYPES)}", field="type")
    if layout is not None and layout not in LAYOUTS:
        raise APIError(422, "validation_error", f"layout must be one of {', '.join(LAYOUTS)}", field="layout")
    own = JobSpec.model_validate(job.spec).layout.value
    return CheckpointVariant(
        layout=layout if layout not in (None, own) else None,
        gguf_type=(gguf_type or "f16") if format == "gguf" else None,
    )


def _reached(job: Job) -> list[float]:
    return list(job.reached_sparsities or [])


@router.get("/checkpoints", response_model=CheckpointsPublic, responses=ERRORS)
def list_checkpoints(job_id: JobId, session: SessionDep, tenant: CurrentTenant) -> CheckpointsPublic:
    """Materialised checkpoints, and the range of sparsities that can still be asked for."""
    job = load_job(session, tenant.id, job_id)
    reached = _reached(job)
    return CheckpointsPublic(
        data=[checkpoint_public(c) for c in job.checkpoints],
        reached_sparsities=reached,
        trajectory_range=SparsityRange(min=min(reached), max=max(reached)) if reached else None,
    )


@router.get(
    "/checkpoints/{sparsity}",
    responses={
        **ERRORS,
        200: {"content": {"application/x-tar": {}}, "description": "the checkpoint as a tar archive"},
        202: {"model": CheckpointPending, "description": "being materialised; poll again"},
        409: {"model": ErrorBody, "description": "sparsity not reached, or materialisation failed"},
        429: {
            "model": ErrorBody,
            "description": "an on-demand quota is reached (per job, or building at once)",
        },
    },
)
def download_checkpoint(
    job_id: JobId,
    sparsity: str,
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: CurrentTenant,
    format: FormatQuery = "tar",
    gguf_type: TypeQuery = None,
    layout: LayoutQuery = None,
) -> Response:
    """Download the checkpoint at ``sparsity`` as a tar archive (with SHA256SUMS), or as one GGUF file.

    A sparsity the trajectory passed through but that was not materialised yet, in the layout and format asked
    for, is materialised by a worker: the answer is then 202 until it is ready.
    """
    value = _parse_sparsity(sparsity)
    job = load_job(session, tenant.id, job_id)
    variant = _variant(job, format, gguf_type, layout)
    checkpoint = crud.get_checkpoint(session=session, job_id=job.id, sparsity=value, variant=variant.name)
    if checkpoint is None:
        reached = _reached(job)
        if not reached or value > max(reached) + EPSILON:
            top = f"{max(reached):.4f}" if reached else "nothing yet"
            raise APIError(
                409,
                "sparsity_not_reached",
                f"the trajectory has not reached sparsity {value:.4f} (it reaches {top})",
                field="sparsity",
            )
        _check_quotas(session, settings, tenant.id, job.id)
        checkpoint, _ = crud.ensure_checkpoint(
            session=session,
            job_id=job.id,
            sparsity=value,
            layout=variant.layout or JobSpec.model_validate(job.spec).layout.value,
            is_target=False,
            variant=variant.name,
        )
        session.commit()
    state = CheckpointStatus(checkpoint.status)
    if state is CheckpointStatus.pending and checkpoint.enqueued_at is None:
        # never handed to the queue (new, or the broker was down): send it; a 503 leaves it to the reaper
        enqueue_materialize(settings, job.id, checkpoint.label, checkpoint.id)
    if state is CheckpointStatus.failed:
        raise APIError(
            409,
            checkpoint.error_code or "materialize_failed",
            checkpoint.error_message or "the checkpoint could not be materialised",
            field="sparsity",
        )
    if state is not CheckpointStatus.ready:
        pending = CheckpointPending(sparsity=checkpoint.sparsity, label=checkpoint.label, status=state.value)
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content=pending.model_dump(),
            headers={"Retry-After": str(pending.retry_after_seconds)},
        )
    artifacts: list[Artifact] = checkpoint.artifacts
    folder = f"{job.id}-{checkpoint.label}"
    if variant.gguf_type is not None:
        return _single_file(storage, artifacts, f"{folder}.gguf")
    sums = "".join(f"{a.sha256}  {a.name}\n" for a in artifacts).encode()
    members = [Member(name=f"{folder}/SHA256SUMS", size=len(sums), data=sums)]
    members += [Member(name=f"{folder}/{a.name}", size=a.size_bytes, key=a.key) for a in artifacts]
    stream = TarStream(storage, members)
    return StreamingResponse(
        iter(stream),
        media_type="application/x-tar",
        headers={
            "Content-Length": str(stream.length),
            "Content-Disposition": f'attachment; filename="{folder}.tar"',
        },
    )


def _single_file(storage: StorageDep, artifacts: list[Artifact], filename: str) -> Response:
    """A one-file checkpoint (GGUF) streamed as it is stored, its recorded sha256 in a header."""
    (artifact,) = artifacts
    return StreamingResponse(
        storage.iter_chunks(artifact.key),
        media_type="application/octet-stream",
        headers={
            "Content-Length": str(artifact.size_bytes),
            "Content-Disposition": f'attachment; filename="{filename}"',
            "X-Checksum-SHA256": artifact.sha256,
        },
    )


@router.get(
    "/checkpoints/{sparsity}/files",
    response_model=CheckpointFiles,
    responses={**ERRORS, 409: {"model": ErrorBody, "description": "not ready, or the store cannot presign"}},
)
def checkpoint_files(
    job_id: JobId,
    sparsity: str,
    session: SessionDep,
    storage: StorageDep,
    tenant: CurrentTenant,
    format: FormatQuery = "tar",
    gguf_type: TypeQuery = None,
    layout: LayoutQuery = None,
) -> CheckpointFiles:
    """Presigned URLs of a ready checkpoint's files, with their sha256 (S3 stores only)."""
    value = _parse_sparsity(sparsity)
    job = load_job(session, tenant.id, job_id)
    variant = _variant(job, format, gguf_type, layout)
    checkpoint = crud.get_checkpoint(session=session, job_id=job.id, sparsity=value, variant=variant.name)
    if checkpoint is None or checkpoint.status != CheckpointStatus.ready.value:
        raise APIError(
            409,
            "checkpoint_not_ready",
            "the checkpoint is not materialised; GET /checkpoints/{sparsity} asks for it",
            field="sparsity",
        )
    files = []
    for artifact in checkpoint.artifacts:
        try:
            url = storage.presigned_url(artifact.key, PRESIGN_SECONDS)
        except StorageError:
            raise APIError(503, "storage_unavailable", "object storage is unreachable; try again") from None
        if url is None:
            raise APIError(
                409,
                "presign_unsupported",
                "this server's store has no direct links; download the tar archive",
            )
        files.append(
            CheckpointFile(
                name=artifact.name, sha256=artifact.sha256, size_bytes=artifact.size_bytes, url=url
            )
        )
    return CheckpointFiles(
        sparsity=checkpoint.sparsity, label=checkpoint.label, expires_in_seconds=PRESIGN_SECONDS, files=files
    )


@router.get(
    "/report",
    responses={**ERRORS, 200: {"content": {"application/json": {}}, "description": "evaluation report"}},
)
def get_report(job_id: JobId, session: SessionDep, storage: StorageDep, tenant: CurrentTenant) -> Response:
    """The job's report: the trajectory's summary plus the evaluations asked for (written when it finishes)."""
    job = load_job(session, tenant.id, job_id)
    try:
        key = fencing.artifact_key(session=session, job_id=job.id, kind="report", name="report.json")
        if key is None:
            raise ObjectNotFound("report.json")
        data = storage.get_bytes(key)
    except ObjectNotFound:
        detail = (
            "the report is written when the job succeeds"
            if not JobStatus(job.status).is_terminal
            else ("this job has no report")
        )
        raise APIError(404, "report_not_ready", detail) from None
    except StorageError:
        raise APIError(503, "storage_unavailable", "object storage is unreachable; try again") from None
    return Response(content=data, media_type="application/json")


@router.get("/report/files/{name}", responses=ERRORS)
def get_report_file(
    job_id: JobId, name: str, session: SessionDep, storage: StorageDep, tenant: CurrentTenant
) -> Response:
    """A file the report links to (plots)."""
    if not _REPORT_FILE_RE.fullmatch(name):
        raise APIError(404, "not_found", "report file not found")
    job = load_job(session, tenant.id, job_id)
    media = {"png": "image/png", "svg": "image/svg+xml", "json": "application/json", "csv": "text/csv"}
    try:
        key = fencing.artifact_key(session=session, job_id=job.id, kind="plot", name=name)
        if key is None:
            raise ObjectNotFound(name)
        data = storage.get_bytes(key)
    except ObjectNotFound:
        raise APIError(404, "not_found", "report file not found") from None
    except StorageError:
        raise APIError(503, "storage_unavailable", "object storage is unreachable; try again") from None
    return Response(content=data, media_type=media[name.rsplit(".", 1)[1]])
