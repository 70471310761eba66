"""Every call the worker makes into the engine, in one place (the only worker module importing torch).

A maintenance-only worker (the reaper) imports the task module without torch installed; so these functions
import the engine when called.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from core.errors import UserInputError
from core.jobs.references import resolve_local_model
from core.pruning_spec import Objective
from core.schemas.jobs import ModelRef
from core.settings import Settings


def load(model: ModelRef, settings: Settings) -> Any:
    """Load the job's base model; ``local/<name>`` resolves only inside GISP_MODELS_DIR.

    A local model is known to the job, its report and its errors by its reference, never by the operator's
    path: the identity and any message name ``local/<name>``.
    """
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
    try:
        loaded = load_model(
            ref,
            revision=model.revision,
            dtype=settings.worker_dtype,
            device=settings.worker_device,
            allow_pickle=False,
            allow_remote_code=settings.allow_remote_code,
        )
    except UserInputError as error:
        message = error.message.replace(str(ref), model.id).replace(str(settings.models_dir), "local")
        raise UserInputError(message, field="model.id", code=error.code) from None
    loaded.identity.update(id=model.id, ref=model.id)
    return loaded


def calibration_items(source: str | Path, objective: Objective, settings: Settings, seed: int) -> list[Any]:
    from core.data.calibration import load_calibration_items

    return load_calibration_items(source, objective, data_dir=settings.data_dir, seed=seed)


def trajectory_from_json(text: str) -> Any:
    from core.engine.trajectory import Trajectory

    return Trajectory.from_json(text)


def run_options(settings: Settings) -> Any:
    from core.pipeline.run import RunOptions

    return RunOptions(
        batch_size=settings.worker_batch_size, device=settings.worker_device, data_dir=settings.data_dir
    )


def run_pipeline(spec: Any, inputs: Any, sink: Any, *, settings: Settings, resume: Any, **hooks: Any) -> Any:
    from core.pipeline.run import RunHooks, run_pipeline

    return run_pipeline(
        spec, inputs, sink, options=run_options(settings), hooks=RunHooks(**hooks), resume=resume
    )


def materialize_on_demand(
    inputs: Any, sink: Any, trajectory: Any, sparsity: float, layout: Any, *, gguf_type: str | None = None
) -> None:
    from core.pipeline.run import materialize_on_demand as build

    build(inputs, sink, trajectory, sparsity, layout, gguf_type=gguf_type)


def verify_candidates(
    inputs: Any,
    trajectory: Any,
    layout: Any,
    curve_request: Any,
    request: Any,
    settings: Settings,
    **hooks: Any,
) -> Any:
    from core.pipeline.verify import VerifyOptions, verify_candidates

    options = VerifyOptions(device=settings.worker_device, data_dir=settings.data_dir)
    return verify_candidates(inputs, trajectory, layout, curve_request, request, options=options, **hooks)


def preload() -> None:
    """Import the engine ahead of the first job; a maintenance-only worker (no torch) skips it."""
    with contextlib.suppress(ImportError):
        import core.pipeline.run  # noqa: F401


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
