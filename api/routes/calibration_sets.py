"""Calibration sets uploaded by a tenant (validated with the engine's rules, stored as JSONL)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.deps import CurrentTenant, SessionDep, SettingsDep, StorageDep
from api.errors import APIError, not_found
from api.params import SetId
from api.routes.jobs import ERRORS
from api.serializers import calibration_set_public
from core.errors import CalibrationError
from core.jobs.calibration_sets import create_calibration_set, get_calibration_set, normalise_upload
from core.pruning_spec import Objective
from core.schemas.calibration import CalibrationSetPublic
from core.schemas.errors import ErrorBody
from core.storage import StorageError

router = APIRouter(prefix="/calibration-sets", tags=["calibration"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CalibrationSetPublic,
    responses={**ERRORS, 413: {"model": ErrorBody, "description": "file larger than GISP_MAX_UPLOAD_BYTES"}},
)
def upload_calibration_set(
    session: SessionDep,
    settings: SettingsDep,
    storage: StorageDep,
    tenant: CurrentTenant,
    file: Annotated[UploadFile, File(description="text (perplexity) or JSONL records for the objective")],
    objective: Annotated[Objective, Form()] = Objective.perplexity,
    name: Annotated[
        str | None,
        Form(
            max_length=200,
            pattern=r"^[^\x00-\x1f\x7f]*$",
            description="a label of yours (no control characters)",
        ),
    ] = None,
) -> CalibrationSetPublic:
    """Upload calibration data; returns its id (use it as ``calibration.set_id``), item count and sha256."""
    data = file.file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise APIError(
            413, "payload_too_large", f"the file exceeds {settings.max_upload_bytes} bytes", field="file"
        )
    try:
        parsed = normalise_upload(data, objective, filename=file.filename or "upload")
    except CalibrationError as error:
        field = "file" if error.field in (None, "calibration") else f"file.{error.field}"
        raise APIError(422, error.code, error.message, field=field) from None
    try:
        record = create_calibration_set(
            session=session,
            storage=storage,
            tenant_id=tenant.id,
            objective=objective,
            parsed=parsed,
            name=name,
        )
    except StorageError:
        raise APIError(503, "storage_unavailable", "object storage is unreachable; try again") from None
    session.commit()
    return calibration_set_public(record)


@router.get("/{set_id}", response_model=CalibrationSetPublic, responses=ERRORS)
def get_set(set_id: SetId, session: SessionDep, tenant: CurrentTenant) -> CalibrationSetPublic:
    record = get_calibration_set(session=session, tenant_id=tenant.id, set_id=set_id)
    if record is None:
        raise not_found("calibration set")
    return calibration_set_public(record)
