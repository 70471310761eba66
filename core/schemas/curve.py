"""The quality-against-size curve of a finished job, as the report stores it.

Contract with the worker that writes ``report.json``: ``"curve": {"dense": POINT, "points": [POINT, ...]}``,
one point per evaluated checkpoint on the trajectory. A metric the run did not measure is absent or null;
selection treats an unmeasured metric as not meeting a bound on it.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CurvePoint(BaseModel):
    """One subnetwork on the trajectory (or the dense model) with what was measured on it."""

    model_config = ConfigDict(extra="allow")

    sparsity: float = Field(..., ge=0.0, lt=1.0, description="fraction of decoder parameters removed")
    label: str = Field(..., max_length=32, description="checkpoint label, e.g. '0.3000' ('dense' for dense)")
    parameters: int = Field(..., ge=0, description="whole-model parameter count")
    perplexity: float | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    accuracy_ratio: float | None = Field(None, description="accuracy / the dense model's accuracy")

    @field_validator("perplexity", "latency_ms", "accuracy", "accuracy_ratio")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        # A diverged evaluation (inf / nan) counts as unmeasured rather than as a number to compare.
        return value if value is None or math.isfinite(value) else None


class Curve(BaseModel):
    dense: CurvePoint
    points: list[CurvePoint] = Field(default_factory=list)


class SelectionBounds(BaseModel):
    """The constraints a user asks a point to meet; at least one is given (checked by the route)."""

    max_perplexity: float | None = None
    max_latency_ms: float | None = None
    min_accuracy_ratio: float | None = None
    max_params: float | None = None


class SelectionFigures(BaseModel):
    parameters: int
    perplexity: float | None = None
    latency_ms: float | None = None
    accuracy: float | None = None
    accuracy_ratio: float | None = None


class VerifiedPoint(BaseModel):
    """One point a re-measurement tried: what the curve says of it and what measuring it again gave."""

    sparsity: float
    label: str
    curve: SelectionFigures = Field(..., description="the figures the job's curve holds for this point")
    measured: SelectionFigures = Field(..., description="the same evaluation, run again on the checkpoint")
    meets: bool = Field(..., description="whether the re-measured figures meet every bound")


class VerificationPublic(BaseModel):
    """How a choice was verified: the curve's choice, then each point stepped back to, re-measured."""

    curve_choice: str = Field(..., description="label of the point the measured curve chose")
    tried: list[VerifiedPoint] = Field(..., description="in the order measured; the last one is the answer")
    evaluation: dict[str, Any] = Field(
        ..., description="what was re-measured: the curve's own evaluation settings (windows, items, latency)"
    )


class SelectionPublic(BaseModel):
    """The point chosen for a set of bounds, why, and where to download it."""

    sparsity: float
    label: str
    figures: SelectionFigures = Field(
        ..., description="the curve's figures; with verify=true, the re-measured figures of the answer"
    )
    rule: str = Field(..., description="the rule that picked this point, in words")
    bounds: SelectionBounds
    download_url: str = Field(..., description="GET it for the checkpoint (202 while it is materialised)")
    verification: VerificationPublic | None = Field(
        None, description="with verify=true: every point re-measured, the curve's figures beside the new ones"
    )


class VerificationPending(BaseModel):
    """``verify=true`` while a worker re-measures: poll again after ``retry_after_seconds``."""

    status: str = Field(..., description="pending (waiting for a worker) or measuring")
    curve_choice: str = Field(..., description="label of the point the measured curve chose")
    candidates: list[str] = Field(..., description="the labels to be tried, in order, until one holds")
    retry_after_seconds: int = 5


class LayerCounts(BaseModel):
    heads: int
    kv_heads: int
    channels: int


class LayersPublic(BaseModel):
    """Per-layer sizes of the subnetwork at one sparsity, and of the dense model for scale."""

    sparsity: float
    label: str
    source: str = Field(..., description="'manifest' (a materialised checkpoint) or 'trajectory' (replayed)")
    layout: str
    layers: list[LayerCounts]
    dense: LayerCounts
