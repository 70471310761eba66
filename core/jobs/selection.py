"""Pick the checkpoint on a job's curve that meets a user's bounds (pure logic: no torch, no I/O).

Bounds come in two families:

* **quality** bounds (``max_perplexity``, ``min_accuracy_ratio``) say how much degradation is tolerable;
* **size** bounds (``max_params``, ``max_latency_ms``) say what the deployment can afford.

The rule:

* quality bounds alone → the **most** pruned point that still meets them. The user named the loss they
  accept; within it the smallest, fastest model is what pruning is for.
* size bounds alone → the **least** pruned point that fits. The user named a budget; every removal beyond it
  costs quality (the subnetworks are nested, so a more pruned point is a strict subset of a less pruned one)
  and buys nothing that was asked for.
* both → the **least** pruned point of the feasible set (meeting every bound). The size bound is the
  budget, as above; the quality bound only filters. Pruning further than the budget asks would trade quality
  away for savings nobody requested, and among feasible points the least pruned is the best-quality one.

Ties (two points at the same sparsity, which a trajectory does not produce but a hand-written curve may):
the better point wins, judged by lower perplexity, then higher accuracy ratio, then fewer parameters, then
the label's text, so the answer never depends on the order of the list.

When no point qualifies, :class:`NoPointQualifies` carries the **closest** point: the one with the smallest
sum over the bounds of its *relative* violation (``(value - bound) / bound`` for an upper bound,
``(bound - value) / bound`` for a lower one, zero when met, infinite when the metric was not measured).
Relative, so that perplexity points and parameter counts add up on one scale. Ties in closeness are broken
the way the rule itself would break them (its preferred direction of sparsity, then the better point).

The dense model is not a candidate (it is not a checkpoint of the run) but serves as the reference of the
accuracy ratio when a point gives an accuracy without a ratio.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from core.schemas.curve import Curve, CurvePoint, SelectionBounds


class Direction(str, Enum):
    most_pruned = "most_pruned"
    least_pruned = "least_pruned"


@dataclass(frozen=True)
class Bound:
    name: str  # the query parameter
    metric: str  # the CurvePoint attribute it constrains
    upper: bool  # True: value <= bound; False: value >= bound
    quality: bool  # quality bound (True) or size/latency bound (False)
    text: str  # how the rule names it


BOUNDS: tuple[Bound, ...] = (
    Bound("max_perplexity", "perplexity", upper=True, quality=True, text="perplexity ≤ {}"),
    Bound("min_accuracy_ratio", "accuracy_ratio", upper=False, quality=True, text="accuracy ratio ≥ {}"),
    Bound("max_params", "parameters", upper=True, quality=False, text="parameters ≤ {}"),
    Bound("max_latency_ms", "latency_ms", upper=True, quality=False, text="latency ≤ {} ms"),
)


class NoBounds(ValueError):
    """Selection needs at least one bound."""


class NoPointQualifies(Exception):
    """No point meets every bound; ``closest`` is the point that misses them by the least (None: empty)."""

    def __init__(self, closest: CurvePoint | None, violations: dict[str, float]) -> None:
        self.closest = closest
        self.violations = violations
        if closest is None:
            message = "the curve has no points"
        else:
            missed = ", ".join(f"{name} by {_percent(v)}" for name, v in violations.items() if v > 0)
            message = f"no point meets the bounds; closest is sparsity {closest.label} (misses {missed})"
        super().__init__(message)


@dataclass(frozen=True)
class Selection:
    point: CurvePoint
    direction: Direction
    rule: str  # the rule in words, naming the bounds


def _percent(violation: float) -> str:
    return "∞ (not measured)" if math.isinf(violation) else f"{violation * 100:.1f} %"


def active_bounds(bounds: SelectionBounds) -> list[tuple[Bound, float]]:
    return [(b, value) for b in BOUNDS if (value := getattr(bounds, b.name)) is not None]


def accuracy_ratio(point: CurvePoint, dense: CurvePoint) -> float | None:
    """The point's ratio, or accuracy / dense accuracy when only accuracies were recorded."""
    if point.accuracy_ratio is not None:
        return point.accuracy_ratio
    if point.accuracy is not None and dense.accuracy:
        return point.accuracy / dense.accuracy
    return None


def _value(point: CurvePoint, bound: Bound, dense: CurvePoint) -> float | None:
    if bound.metric == "accuracy_ratio":
        return accuracy_ratio(point, dense)
    value = getattr(point, bound.metric)
    return None if value is None else float(value)


def violations(point: CurvePoint, bounds: SelectionBounds, dense: CurvePoint) -> dict[str, float]:
    """Relative violation of each active bound (0 when met, inf when the metric was not measured)."""
    out: dict[str, float] = {}
    for bound, limit in active_bounds(bounds):
        value = _value(point, bound, dense)
        if value is None:
            out[bound.name] = math.inf
        else:
            excess = value - limit if bound.upper else limit - value
            out[bound.name] = max(0.0, excess / limit)
    return out


def meets(point: CurvePoint, bounds: SelectionBounds, dense: CurvePoint) -> bool:
    return all(v == 0.0 for v in violations(point, bounds, dense).values())


def direction_for(bounds: SelectionBounds) -> Direction:
    """Most pruned when only quality is bounded, least pruned as soon as a size or latency bound is given."""
    chosen = active_bounds(bounds)
    if not chosen:
        raise NoBounds("give at least one bound")
    return Direction.most_pruned if all(b.quality for b, _ in chosen) else Direction.least_pruned


def _better_first(dense: CurvePoint) -> Callable[[CurvePoint], tuple[float, float, int, str]]:
    """Sort key of the tie-break: lower perplexity, higher accuracy ratio, fewer parameters, label."""

    def key(point: CurvePoint) -> tuple[float, float, int, str]:
        perplexity = point.perplexity if point.perplexity is not None else math.inf
        ratio = accuracy_ratio(point, dense)
        return (perplexity, -ratio if ratio is not None else math.inf, point.parameters, point.label)

    return key


def _extreme(points: list[CurvePoint], direction: Direction, dense: CurvePoint) -> CurvePoint:
    """The point furthest in ``direction``; among equal sparsities, the better one."""
    ordered = sorted(points, key=_better_first(dense))
    pick = max if direction is Direction.most_pruned else min
    return pick(ordered, key=lambda p: p.sparsity)  # max/min keep the first of equals: the better one


def describe(direction: Direction, bounds: SelectionBounds) -> str:
    parts = " and ".join(bound.text.format(f"{limit:g}") for bound, limit in active_bounds(bounds))
    which = "most" if direction is Direction.most_pruned else "least"
    return f"the {which} pruned point with {parts}"


def select_point(curve: Curve, bounds: SelectionBounds) -> Selection:
    """The point the rule picks; raises NoBounds or NoPointQualifies."""
    direction = direction_for(bounds)
    feasible = [p for p in curve.points if meets(p, bounds, curve.dense)]
    if feasible:
        return Selection(_extreme(feasible, direction, curve.dense), direction, describe(direction, bounds))
    raise NoPointQualifies(*closest_point(curve, bounds, direction))


def closest_point(
    curve: Curve, bounds: SelectionBounds, direction: Direction
) -> tuple[CurvePoint | None, dict[str, float]]:
    """The point of least total relative violation (ties: the rule's direction, then the better point)."""
    if not curve.points:
        return None, {}
    totals = {id(p): sum(violations(p, bounds, curve.dense).values()) for p in curve.points}
    least = min(totals.values())
    nearest = [p for p in curve.points if totals[id(p)] == least]
    point = _extreme(nearest, direction, curve.dense)
    return point, violations(point, bounds, curve.dense)


# --- re-measuring the choice (``verify=true``) ---

POINT_FIELDS = set(CurvePoint.model_fields)


def verification_order(curve: Curve, selection: Selection) -> list[CurvePoint]:
    """The points a re-measurement tries, in order: the chosen one, then each step back from it.

    Quality bounds alone (most pruned first): a step back is the next *less* sparse point, which gives
    quality back. With a size or latency bound (least pruned first) the chosen point is the least pruned
    the budget allows, so no less sparse point can fit it: a step back is the next *more* sparse point
    (smaller, faster; this is what helps when a re-measured latency misses its bound). One point per
    sparsity (the better of equals, as the rule itself breaks ties).
    """
    chosen = selection.point.sparsity
    ordered = sorted(curve.points, key=_better_first(curve.dense))
    by_sparsity: dict[float, CurvePoint] = {}
    for point in ordered:
        by_sparsity.setdefault(point.sparsity, point)
    if selection.direction is Direction.most_pruned:
        sparsities = sorted((s for s in by_sparsity if s <= chosen), reverse=True)
    else:
        sparsities = sorted(s for s in by_sparsity if s >= chosen)
    return [selection.point] + [by_sparsity[s] for s in sparsities if s != chosen]


def verification_request(curve: Curve, bounds: SelectionBounds, selection: Selection) -> dict[str, Any]:
    """What a worker needs to re-measure the choice, as stored JSON (its digest keys the request)."""

    def plain(point: CurvePoint) -> dict[str, Any]:
        return point.model_dump(include=POINT_FIELDS)

    return {
        "bounds": bounds.model_dump(exclude_none=True),
        "rule": selection.rule,
        "dense": plain(curve.dense),
        "candidates": [plain(p) for p in verification_order(curve, selection)],
    }


def no_point_verified(
    tried: list[dict[str, Any]], bounds: SelectionBounds, dense: CurvePoint
) -> tuple[str, str | None]:
    """When every candidate missed a bound once re-measured: the message naming the closest one and by how
    much it misses, and the bound it misses most (the field of the error)."""
    measured = [CurvePoint.model_validate(t["measured"]) for t in tried]
    closest = min(measured, key=lambda p: sum(violations(p, bounds, dense).values()))
    missed = violations(closest, bounds, dense)
    text = ", ".join(f"{name} by {_percent(v)}" for name, v in missed.items() if v > 0)
    labels = ", ".join(p.label for p in measured)
    message = (
        f"no point meets the bounds once re-measured (tried {labels}); "
        f"closest is sparsity {closest.label} (misses {text})"
    )
    return message, max(missed, key=missed.__getitem__) if missed else None
