"""Database rows to public schemas."""

from __future__ import annotations

from core.db.models import CalibrationSet, Checkpoint, Job, JobEvent
from core.jobs.states import CheckpointVariant, Phase, sparsity_label
from core.schemas.calibration import CalibrationSetPublic
from core.schemas.jobs import (
    CheckpointPublic,
    EventPublic,
    JobError,
    JobProgress,
    JobPublic,
    JobSpec,
)


def download_url(checkpoint: Checkpoint) -> str:
    """The route that downloads this row: the sparsity, then the variant as query parameters."""
    url = f"/v1/jobs/{checkpoint.job_id}/checkpoints/{sparsity_label(checkpoint.sparsity)}"
    variant = CheckpointVariant.parse(checkpoint.variant or "")
    query = [f"layout={variant.layout}"] if variant.layout else []
    if variant.gguf_type:
        query += ["format=gguf", f"type={variant.gguf_type}"]
    return f"{url}?{'&'.join(query)}" if query else url


def checkpoint_public(checkpoint: Checkpoint) -> CheckpointPublic:
    return CheckpointPublic(
        sparsity=checkpoint.sparsity,
        label=checkpoint.label,
        status=checkpoint.status,
        is_target=checkpoint.is_target,
        layout=checkpoint.layout,
        size_bytes=checkpoint.total_bytes,
        variant=checkpoint.variant,
        download_url=download_url(checkpoint),
    )


def job_public(job: Job) -> JobPublic:
    error = None
    if job.error_code:
        error = JobError(code=job.error_code, message=job.error_message or "", field=job.error_field)
    return JobPublic(
        id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempt=job.attempt,
        request=JobSpec.model_validate(job.spec),
        progress=JobProgress(
            phase=Phase(job.phase or Phase.queued.value),
            phase_done=job.phase_done,
            phase_total=job.phase_total,
            step=job.progress_step,
            total_steps=job.progress_total,
            current_sparsity=job.current_sparsity,
            calibration_loss=job.calibration_loss,
            eta_seconds=job.eta_seconds,
        ),
        error=error,
        checkpoints=[checkpoint_public(c) for c in job.checkpoints],
    )


def event_public(event: JobEvent) -> EventPublic:
    return EventPublic(id=event.id, created_at=event.created_at, kind=event.kind, data=event.data)


def calibration_set_public(record: CalibrationSet) -> CalibrationSetPublic:
    return CalibrationSetPublic(
        id=record.id,
        name=record.name,
        objective=record.objective,
        item_count=record.item_count,
        size_bytes=record.size_bytes,
        fingerprint=record.sha256,
        created_at=record.created_at,
    )
