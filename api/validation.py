"""Checks of a job request that need the server's context (its folders, its settings, the tenant's sets)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import APIError
from core.jobs.calibration_sets import get_calibration_set
from core.jobs.references import check_named_set, resolve_local_model
from core.pruning_spec import PruneSettings
from core.schemas.jobs import JobCreate, SpecError
from core.settings import Settings


def invalid(field: str, message: str, code: str = "validation_error") -> APIError:
    return APIError(422, code, message, field=field)


def validate_job_request(
    *, session: Session, settings: Settings, tenant_id: str, job_in: JobCreate
) -> PruneSettings:
    try:
        prune_settings = job_in.to_prune_settings()
    except SpecError as error:
        raise invalid(error.field, error.message, error.code) from None
    if len(prune_settings.sparsities) > settings.max_sparsities:
        raise invalid("sparsities", f"at most {settings.max_sparsities} target sparsities per job")

    model = job_in.model
    if model.is_local:
        if model.revision is not None:
            raise invalid("model.revision", "local models have no revisions")
        if resolve_local_model(settings.models_dir, model.local_name) is None:
            raise invalid("model.id", f"no local model '{model.local_name}' on this server", "unknown_model")
    elif not settings.allow_hub_models:
        raise invalid(
            "model.id", "hub models are disabled on this server; use 'local/<name>'", "hub_disabled"
        )

    calibration = job_in.calibration
    if calibration.set_id is not None:
        record = get_calibration_set(session=session, tenant_id=tenant_id, set_id=calibration.set_id)
        if record is None:
            raise invalid("calibration.set_id", "no such calibration set", "unknown_calibration_set")
        if record.objective != job_in.objective.value:
            raise invalid(
                "calibration.set_id",
                f"this set was uploaded for objective '{record.objective}', not '{job_in.objective.value}'",
            )
    elif calibration.name is not None and (problem := check_named_set(calibration.name, job_in.objective)):
        raise invalid("calibration.name", problem)
    return prune_settings
