"""Every call the worker makes into the engine, in one place (the only worker module importing torch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.jobs.references import resolve_local_model
from core.pruning_spec import Layout, Objective, PruneSettings
from core.schemas.jobs import ModelRef
from core.settings import Settings


def load(model: ModelRef, settings: Settings) -> Any:
    """Load the job's base model; ``local/<name>`` resolves only inside GISP_MODELS_DIR."""
    from core.engine.loading import load_model

    if model.is_local:
        path = resolve_local_model(settings.models_dir, model.local_name)
        if path is None:
            raise UserInputError(
                f"no local model '{model.local_name}' on this worker", field="model.id", code="unknown_model"
            )
        ref: str | Path = path
    elif not settings.allow_hub_models:
        raise UserInputError("hub models are disabled on this server", field="model.id", code="hub_disabled")
    else:
        ref = model.id
    return load_model(
        ref,
        revision=model.revision,
        dtype=settings.worker_dtype,
        device=settings.worker_device,
        allow_pickle=False,
        allow_remote_code=settings.allow_remote_code,
    )


def calibration_items(source: str | Path, objective: Objective, settings: Settings, seed: int) -> list[Any]:
    from core.data.calibration import load_calibration_items

    return load_calibration_items(source, objective, data_dir=settings.data_dir, seed=seed)


def trajectory_from_json(text: str) -> Any:
    from core.engine.trajectory import Trajectory

    return Trajectory.from_json(text)


def settings_for_layout(prune_settings: PruneSettings, loaded: Any, layout: Layout) -> PruneSettings:
    from core.engine.materialize import settings_for_layout as fit

    return fit(prune_settings, loaded.model.config, layout)


def run_prune(
    loaded: Any,
    items: list[Any],
    prune_settings: PruneSettings,
    *,
    on_step: Callable[[Any, Any], None],
    should_stop: Callable[[], bool],
    resume: Any | None,
) -> Any:
    from core.engine.pruner import prune

    return prune(loaded, items, prune_settings, on_step=on_step, should_stop=should_stop, resume=resume)


def materialize(
    loaded: Any, trajectory: Any, sparsity: float, out_dir: Path, layout: Layout, calibration: list[Any]
) -> Path:
    from core.engine.materialize import materialize as engine_materialize

    return engine_materialize(loaded, trajectory, sparsity, out_dir, layout=layout, calibration=calibration)


def preload() -> None:
    """Import the engine ahead of the first job; a maintenance-only worker (no torch) skips it."""
    try:
        import core.engine.loading
        import core.engine.materialize
        import core.engine.pruner  # noqa: F401
    except ImportError:
        pass


def release_memory() -> None:
    """Give cached accelerator memory back between jobs (a long-lived worker runs many)."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:  # pragma: no cover - the worker image always has torch
        pass
