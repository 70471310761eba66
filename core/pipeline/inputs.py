"""The command line's inputs: a model reference (hub id, folder or .gguf) and a named set or a file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.data.calibration import CalibrationItem, load_calibration_items
from core.engine.loading import LoadedModel, load_model
from core.pruning_spec import Objective


@dataclass
class LocalInputs:
    model: str
    calibration: str
    objective: Objective
    seed: int
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    data_dir: Path | None = None
    allow_pickle: bool = False
    allow_remote_code: bool = False

    def load_model(self) -> LoadedModel:
        return load_model(
            self.model,
            revision=self.revision,
            dtype=self.dtype,
            device=self.device,
            allow_pickle=self.allow_pickle,
            allow_remote_code=self.allow_remote_code,
        )

    def calibration_items(self) -> Sequence[CalibrationItem]:
        return load_calibration_items(
            self.calibration, self.objective, data_dir=self.data_dir, seed=self.seed
        )
