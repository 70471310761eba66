"""A job's calibration items, loaded the same way for its pruning run and for any later checkpoint refit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from core.db.models import CalibrationSet
from core.db.session import session_scope
from core.errors import UserInputError
from core.jobs.references import check_named_set
from core.schemas.jobs import JobCreate
from core.settings import Settings
from core.storage import Storage
from worker import engine_runner


def job_calibration_items(
    *, settings: Settings, storage: Storage, tenant_id: str, spec: JobCreate
) -> list[Any]:
    """The named set or the tenant's uploaded set the job names; a set deleted since is a user error."""
    calibration = spec.calibration
    if calibration.name is not None:
        problem = check_named_set(calibration.name, spec.objective)
        if problem:
            raise UserInputError(problem, field="calibration.name", code="invalid_calibration")
        return engine_runner.calibration_items(calibration.name, spec.objective, settings, spec.seed)
    with session_scope(settings) as session:
        record = session.get(CalibrationSet, calibration.set_id)
        if record is None or record.tenant_id != tenant_id:
            raise UserInputError(
                "the calibration set no longer exists",
                field="calibration.set_id",
                code="unknown_calibration_set",
            )
        key = record.storage_key
    with tempfile.TemporaryDirectory(prefix="gisp-cal-") as tmp:
        path = Path(tmp) / "data.jsonl"
        storage.download_file(key, path)
        return engine_runner.calibration_items(path, spec.objective, settings, spec.seed)
