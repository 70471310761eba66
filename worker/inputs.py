"""A job's inputs on a worker: its model from the operator's folder (or the hub, if allowed), and its
calibration set, named or uploaded by the tenant. The same items serve the run and any later refit."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from core.db.models import CalibrationSet
from core.db.session import session_scope
from core.errors import UserInputError
from core.jobs.references import check_named_set
from core.schemas.jobs import JobSpec
from worker import engine_runner
from worker.context import JobContext


class JobInputs:
    """Implements ``core.pipeline.run.Inputs`` for a job of the service."""

    def __init__(self, context: JobContext, spec: JobSpec) -> None:
        self.context = context
        self.spec = spec

    def load_model(self) -> Any:
        return engine_runner.load(self.spec.model, self.context.settings)

    def calibration_items(self) -> list[Any]:
        """The named set or the tenant's uploaded set the job names; a set deleted since is a user error."""
        spec, context = self.spec, self.context
        calibration = spec.calibration
        if calibration.name is not None:
            problem = check_named_set(calibration.name, spec.objective)
            if problem:
                raise UserInputError(problem, field="calibration.name", code="invalid_calibration")
            return engine_runner.calibration_items(
                calibration.name, spec.objective, context.settings, spec.seed
            )
        with session_scope(context.settings) as session:
            record = session.get(CalibrationSet, calibration.set_id)
            if record is None or record.tenant_id != context.tenant_id:
                raise UserInputError(
                    "the calibration set no longer exists",
                    field="calibration.set_id",
                    code="unknown_calibration_set",
                )
            key = record.storage_key
        with tempfile.TemporaryDirectory(prefix="gisp-cal-") as tmp:
            path = Path(tmp) / "data.jsonl"
            context.storage.download_file(key, path)
            return engine_runner.calibration_items(path, spec.objective, context.settings, spec.seed)
