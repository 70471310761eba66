"""Discoverable inputs: the models a job may name and the calibration sets it may use."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentTenant, SessionDep, SettingsDep
from api.errors import APIError
from api.routes.jobs import ERRORS
from api.serializers import calibration_set_public
from core.families import FAMILIES
from core.jobs.calibration_sets import list_calibration_sets
from core.jobs.catalog import available_named_sets, local_models
from core.pruning_spec import Objective
from core.schemas.catalog import (
    CalibrationCatalogPublic,
    ModelPublic,
    ModelsPublic,
    NamedCalibrationSetPublic,
)

router = APIRouter(tags=["catalog"])


@router.get("/models", response_model=ModelsPublic, responses=ERRORS)
def list_models(settings: SettingsDep, _: CurrentTenant) -> ModelsPublic:
    """The operator's models under GISP_MODELS_DIR, as ``local/<name>``, with family, size and parameters."""
    models = [
        ModelPublic(
            id=m.id,
            name=m.name,
            format=m.format,
            family=m.family,
            supported=m.family in FAMILIES,
            parameters=m.parameters,
            size_bytes=m.size_bytes,
        )
        for m in local_models(settings.models_dir)
    ]
    return ModelsPublic(data=models, hub_models_allowed=settings.allow_hub_models)


@router.get("/calibration-sets", response_model=CalibrationCatalogPublic, responses=ERRORS)
def list_sets(
    session: SessionDep,
    settings: SettingsDep,
    tenant: CurrentTenant,
    objective: Objective | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
) -> CalibrationCatalogPublic:
    """Named sets in the data folder (first page) and the tenant's uploads, newest first, cursor-paged."""
    page = min(limit or settings.page_size_default, settings.page_size_max)
    try:
        records, next_cursor = list_calibration_sets(
            session=session, tenant_id=tenant.id, objective=objective, cursor=cursor, limit=page
        )
    except ValueError:
        raise APIError(422, "validation_error", "invalid cursor", field="cursor") from None
    named = []
    if cursor is None:
        named = [
            NamedCalibrationSetPublic(name=s.name, objective=s.objective.value)
            for s in available_named_sets(settings.data_dir)
            if objective is None or s.objective is objective
        ]
    return CalibrationCatalogPublic(
        named=named, data=[calibration_set_public(r) for r in records], next_cursor=next_cursor
    )
