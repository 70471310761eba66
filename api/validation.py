"""Checks of a job request that need the server's context (its folders, its settings, the tenant's sets).

The body itself was validated by ``JobSpec`` (every engine rule, every default resolved); what is left needs
the server: whether the model and calibration set exist here, the operator's limits, and the one default
that depends on the model's family (``fit_to_layout``), resolved here so the stored spec is what runs.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from api.errors import APIError
from core.errors import UserInputError
from core.jobs.calibration_sets import get_calibration_set
from core.jobs.catalog import local_model_names
from core.jobs.references import check_named_set, local_model_family, resolve_local_model
from core.pruning_spec import fit_to_layout
from core.schemas.jobs import JobSpec
from core.settings import Settings


def invalid(field: str, message: str, code: str = "validation_error") -> APIError:
    return APIError(422, code, message, field=field)


def unknown_model_message(settings: Settings, name: str, shown: int = 20) -> str:
    """Name the models that do exist (GET /v1/models has the details), so a typo is fixed at once."""
    names = local_model_names(settings.models_dir)
    if not names:
        return f"no local model '{name}' on this server (it offers none)"
    listed = ", ".join(f"local/{n}" for n in names[:shown])
    more = f" and {len(names) - shown} more (GET /v1/models)" if len(names) > shown else ""
    return f"no local model '{name}' on this server; available: {listed}{more}"


def validate_job_request(*, session: Session, settings: Settings, tenant_id: str, job_in: JobSpec) -> JobSpec:
    """The effective spec to store, or a 422 naming the field."""
    if len(job_in.sparsities) > settings.max_sparsities:
        raise invalid("sparsities", f"at most {settings.max_sparsities} target sparsities per job")
    job_in = _check_model(settings, job_in)
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
    return job_in


def _check_model(settings: Settings, job_in: JobSpec) -> JobSpec:
    model = job_in.model
    if not model.is_local:
        if not settings.allow_hub_models:
            raise invalid(
                "model.id", "hub models are disabled on this server; use 'local/<name>'", "hub_disabled"
            )
        return job_in  # the family is known once the worker loads it, which applies the same rule
    if model.revision is not None:
        raise invalid("model.revision", "local models have no revisions")
    path = resolve_local_model(settings.models_dir, model.local_name)
    if path is None:
        raise invalid("model.id", unknown_model_message(settings, model.local_name), "unknown_model")
    try:
        family = local_model_family(path)
        if family is None:
            return job_in
        return fit_to_layout(job_in, family, job_in.layout)
    except UserInputError as error:
        field = "model.id" if error.field == "model" else error.field or "body"
        raise invalid(field, error.message) from None
