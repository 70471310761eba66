"""The quality-against-size curve of a finished job, as the report stores it.

Contract with the worker that writes ``report.json``: ``"curve": {"dense": POINT, "points": [POINT, ...]}``,
one point per evaluated checkpoint on the trajectory. A metric the run did not measure is absent or null;
selection treats an unmeasured metric as not meeting a bound on it.
"""

from __future__ import annotations

import math

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


class SelectionPublic(BaseModel):
    """The point chosen for a set of bounds, why, and where to download it."""

    sparsity: float
    label: str
    figures: SelectionFigures
    rule: str = Field(..., description="the rule that picked this point, in words")
    bounds: SelectionBounds
    download_url: str = Field(..., description="GET it for the checkpoint (202 while it is materialised)")


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
