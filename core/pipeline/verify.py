"""Re-measuring the point a selection chose (``GET /select?verify=true``), stepping back until it holds.

The curve's figures were measured once, after the run. Asked to verify, a worker builds each candidate
checkpoint again as it would be downloaded (the run's layout, refitted when the run refits: the same
``checkpoint_at`` the curve measured) and measures it with the evaluation the curve used (the job's
``curve`` settings: the same WikiText-2 windows, CMQA items and latency probe). The first candidate whose
re-measured figures meet every bound is the verified choice; every candidate tried is reported with its
curve figures beside its re-measured ones, so a user sees how far the two agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.engine.materialize import checkpoint_at
from core.engine.trajectory import Trajectory
from core.jobs.selection import meets
from core.pipeline.curve import CurveMeter
from core.pipeline.run import Inputs
from core.pruning_spec import Layout
from core.schemas.curve import CurvePoint, SelectionBounds
from core.schemas.jobs import CurveRequest


@dataclass
class VerifyOptions:
    device: str = "cpu"
    data_dir: Path | None = None


def verify_candidates(
    inputs: Inputs,
    trajectory: Trajectory,
    layout: Layout,
    curve_request: CurveRequest,
    request: dict[str, Any],
    *,
    options: VerifyOptions | None = None,
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure ``request["candidates"]`` in order until one meets ``request["bounds"]``.

    Returns ``{"verified": LABEL or None, "tried": [...], "evaluation": {...}}``; each tried entry holds the
    point's ``curve`` figures, its ``measured`` ones and whether those ``meets`` the bounds. ``on_point`` is
    called after each measurement (the worker checks its claim there).
    """
    options = options or VerifyOptions()
    bounds = SelectionBounds.model_validate(request["bounds"])
    dense = CurvePoint.model_validate(request["dense"])
    loaded, items = inputs.load_model(), inputs.calibration_items()
    meter = CurveMeter(curve_request, loaded.tokenizer, options.device, options.data_dir)
    meter.dense = dict(request["dense"])  # the accuracy ratio's reference: the dense figures of the curve
    tried: list[dict[str, Any]] = []
    verified = None
    for candidate in request["candidates"]:
        point = CurvePoint.model_validate(candidate)
        _, model = checkpoint_at(loaded, trajectory, point.sparsity, layout, items)
        measured = meter.measure(model, point.sparsity)
        del model
        entry = {
            "sparsity": point.sparsity,
            "label": point.label,
            "curve": candidate,
            "measured": measured,
            "meets": meets(CurvePoint.model_validate(measured), bounds, dense),
        }
        tried.append(entry)
        if on_point is not None:
            on_point(entry)
        if entry["meets"]:
            verified = point.label
            break
    description = meter.to_dict()
    evaluation = {"perplexity": description["perplexity"], "cmqa_limit": description["cmqa_limit"]}
    evaluation["latency"] = curve_request.latency
    return {"verified": verified, "tried": tried, "evaluation": evaluation}
