"""The selection rule against a brute-force transcription of its definition, on random curves."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.jobs.selection import (
    Direction,
    NoBounds,
    NoPointQualifies,
    no_point_verified,
    select_point,
    verification_order,
    verification_request,
)
from core.schemas.curve import Curve, CurvePoint, SelectionBounds

DENSE = CurvePoint(sparsity=0.0, label="dense", parameters=1000, perplexity=10.0, accuracy=0.6)


def _point(sparsity: float, perplexity: float | None, **extra: float | int | None) -> CurvePoint:
    parameters = extra.pop("parameters", None)
    return CurvePoint(
        sparsity=sparsity,
        label=f"{sparsity:.4f}",
        parameters=int(parameters if parameters is not None else round(1000 * (1 - sparsity))),
        perplexity=perplexity,
        **extra,
    )


# --- hand-worked examples (each expected answer is read off the rule's wording) ---

CURVE = Curve(
    dense=DENSE,
    points=[
        _point(0.1, 12.0, latency_ms=9.0, accuracy=0.58),
        _point(0.2, 15.0, latency_ms=8.0, accuracy=0.55),
        _point(0.3, 21.0, latency_ms=7.0, accuracy=0.50),
        _point(0.4, 40.0, latency_ms=6.0, accuracy=0.42),
    ],
)


def test_quality_bound_alone_takes_the_most_pruned_point_meeting_it() -> None:
    chosen = select_point(CURVE, SelectionBounds(max_perplexity=25))
    assert chosen.point.sparsity == 0.3
    assert chosen.direction is Direction.most_pruned
    assert "most pruned" in chosen.rule and "perplexity ≤ 25" in chosen.rule


def test_accuracy_ratio_is_derived_from_the_dense_accuracy() -> None:
    # 0.55 / 0.6 = 0.9167 and 0.50 / 0.6 = 0.833: a 0.9 floor keeps 0.1 and 0.2.
    assert select_point(CURVE, SelectionBounds(min_accuracy_ratio=0.9)).point.sparsity == 0.2


def test_size_bound_alone_takes_the_least_pruned_point_that_fits() -> None:
    # parameters: 900, 800, 700, 600; a budget of 750 fits 0.3 and 0.4; the least pruned is 0.3.
    chosen = select_point(CURVE, SelectionBounds(max_params=750))
    assert chosen.point.sparsity == 0.3
    assert chosen.direction is Direction.least_pruned
    assert select_point(CURVE, SelectionBounds(max_latency_ms=8.5)).point.sparsity == 0.2


def test_both_families_take_the_least_pruned_feasible_point() -> None:
    # feasible: perplexity <= 30 -> {0.1, 0.2, 0.3}; latency <= 8 -> {0.2, 0.3, 0.4}; both -> {0.2, 0.3}.
    chosen = select_point(CURVE, SelectionBounds(max_perplexity=30, max_latency_ms=8))
    assert chosen.point.sparsity == 0.2


def test_nothing_qualifies_names_the_closest_point() -> None:
    # perplexity <= 11 misses 0.1 by 1/11, 0.2 by 4/11, ...: 0.1 is the closest.
    with pytest.raises(NoPointQualifies) as caught:
        select_point(CURVE, SelectionBounds(max_perplexity=11))
    assert caught.value.closest is not None and caught.value.closest.sparsity == 0.1
    assert caught.value.violations["max_perplexity"] == pytest.approx(1 / 11)
    assert "0.1000" in str(caught.value)


def test_an_unmeasured_metric_never_meets_its_bound() -> None:
    curve = Curve(dense=DENSE, points=[_point(0.2, 15.0), _point(0.4, 30.0, latency_ms=5.0)])
    # Only 0.4 has a latency: it is the one point that can meet a latency bound.
    assert select_point(curve, SelectionBounds(max_latency_ms=100)).point.sparsity == 0.4
    with pytest.raises(NoPointQualifies) as caught:
        select_point(curve, SelectionBounds(max_latency_ms=1))
    assert caught.value.closest is not None and caught.value.closest.sparsity == 0.4


def test_ties_at_one_sparsity_prefer_the_better_point_whatever_the_order() -> None:
    worse, better = _point(0.3, 20.0), _point(0.3, 18.0)
    better = better.model_copy(update={"label": "0.3000b"})
    for points in ([worse, better], [better, worse]):
        chosen = select_point(Curve(dense=DENSE, points=points), SelectionBounds(max_perplexity=25))
        assert chosen.point.perplexity == 18.0


def test_no_bounds_is_refused() -> None:
    with pytest.raises(NoBounds):
        select_point(CURVE, SelectionBounds())


def test_an_empty_curve_has_no_closest_point() -> None:
    with pytest.raises(NoPointQualifies) as caught:
        select_point(Curve(dense=DENSE, points=[]), SelectionBounds(max_params=10))
    assert caught.value.closest is None


# --- random curves against a brute-force transcription of the rule ---

metric = st.one_of(st.none(), st.floats(min_value=0.5, max_value=500, allow_nan=False))
sparsities = st.sampled_from([round(0.05 * i, 2) for i in range(1, 19)])


@st.composite
def curves(draw: st.DrawFn) -> Curve:
    dense_accuracy = draw(st.one_of(st.none(), st.floats(min_value=0.2, max_value=0.9)))
    dense = CurvePoint(
        sparsity=0.0, label="dense", parameters=10_000, perplexity=5.0, accuracy=dense_accuracy
    )
    count = draw(st.integers(min_value=0, max_value=8))
    points = []
    for i in range(count):
        sparsity = draw(sparsities)
        points.append(
            CurvePoint(
                sparsity=sparsity,
                label=f"p{i}",
                parameters=draw(st.integers(min_value=1, max_value=10_000)),
                perplexity=draw(metric),
                latency_ms=draw(metric),
                accuracy=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0))),
                accuracy_ratio=draw(st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.5))),
            )
        )
    return Curve(dense=dense, points=points)


positive = st.one_of(st.none(), st.floats(min_value=0.01, max_value=600, allow_nan=False))


@st.composite
def bounds(draw: st.DrawFn) -> SelectionBounds:
    values = {
        "max_perplexity": draw(positive),
        "max_latency_ms": draw(positive),
        "min_accuracy_ratio": draw(st.one_of(st.none(), st.floats(min_value=0.01, max_value=1.5))),
        "max_params": draw(st.one_of(st.none(), st.integers(min_value=1, max_value=12_000).map(float))),
    }
    if all(v is None for v in values.values()):
        values["max_perplexity"] = 100.0
    return SelectionBounds(**values)


def _ratio(point: CurvePoint, dense: CurvePoint) -> float | None:
    if point.accuracy_ratio is not None:
        return point.accuracy_ratio
    if point.accuracy is None or not dense.accuracy:
        return None
    return point.accuracy / dense.accuracy


def _checks(
    point: CurvePoint, dense: CurvePoint, b: SelectionBounds
) -> list[tuple[float | None, float, int]]:
    """(value, bound, sign): sign +1 for 'value <= bound', -1 for 'value >= bound'."""
    rows = []
    if b.max_perplexity is not None:
        rows.append((point.perplexity, b.max_perplexity, 1))
    if b.max_latency_ms is not None:
        rows.append((point.latency_ms, b.max_latency_ms, 1))
    if b.max_params is not None:
        rows.append((float(point.parameters), b.max_params, 1))
    if b.min_accuracy_ratio is not None:
        rows.append((_ratio(point, dense), b.min_accuracy_ratio, -1))
    return rows


def _feasible(point: CurvePoint, dense: CurvePoint, b: SelectionBounds) -> bool:
    return all(v is not None and (v <= lim if s > 0 else v >= lim) for v, lim, s in _checks(point, dense, b))


def _distance(point: CurvePoint, dense: CurvePoint, b: SelectionBounds) -> float:
    total = 0.0
    for value, limit, sign in _checks(point, dense, b):
        total += math.inf if value is None else max(0.0, sign * (value - limit) / limit)
    return total


def _reference(curve: Curve, b: SelectionBounds) -> tuple[bool, CurvePoint | None]:
    """(found, point) straight from the rule's wording, by sorting every candidate on one full key."""
    most = b.max_params is None and b.max_latency_ms is None
    dense = curve.dense

    def rank(point: CurvePoint) -> tuple[float, float, float, int, str]:
        ratio = _ratio(point, dense)
        return (
            -point.sparsity if most else point.sparsity,
            point.perplexity if point.perplexity is not None else math.inf,
            -ratio if ratio is not None else math.inf,
            point.parameters,
            point.label,
        )

    feasible = [p for p in curve.points if _feasible(p, dense, b)]
    if feasible:
        return True, sorted(feasible, key=rank)[0]
    if not curve.points:
        return False, None
    return False, sorted(curve.points, key=lambda p: (_distance(p, dense, b), rank(p)))[0]


@settings(max_examples=400, deadline=None)
@given(curves(), bounds())
def test_rule_matches_brute_force(curve: Curve, b: SelectionBounds) -> None:
    found, expected = _reference(curve, b)
    try:
        chosen = select_point(curve, b).point
    except NoPointQualifies as error:
        assert not found
        assert error.closest is expected
        return
    assert found
    assert chosen is expected


@settings(max_examples=200, deadline=None)
@given(curves(), st.floats(min_value=0.5, max_value=500), st.floats(min_value=0.0, max_value=100))
def test_a_looser_quality_bound_never_selects_a_less_pruned_point(
    curve: Curve, limit: float, slack: float
) -> None:
    def pick(value: float) -> float | None:
        try:
            return select_point(curve, SelectionBounds(max_perplexity=value)).point.sparsity
        except NoPointQualifies:
            return None

    tight, loose = pick(limit), pick(limit + slack)
    if tight is not None:
        assert loose is not None and loose >= tight


@settings(max_examples=200, deadline=None)
@given(curves(), st.integers(min_value=1, max_value=10_000), st.integers(min_value=0, max_value=5000))
def test_a_larger_budget_never_selects_a_more_pruned_point(curve: Curve, budget: int, extra: int) -> None:
    def pick(value: int) -> float | None:
        try:
            return select_point(curve, SelectionBounds(max_params=float(value))).point.sparsity
        except NoPointQualifies:
            return None

    small, large = pick(budget), pick(budget + extra)
    if small is not None:
        assert large is not None and large <= small


# --- the order a re-measurement (verify=true) tries points in ---


def test_verification_steps_back_to_less_sparse_points_for_a_quality_bound() -> None:
    chosen = select_point(CURVE, SelectionBounds(max_perplexity=25))
    assert [p.sparsity for p in verification_order(CURVE, chosen)] == [0.3, 0.2, 0.1]


def test_verification_steps_to_more_sparse_points_under_a_size_budget() -> None:
    chosen = select_point(CURVE, SelectionBounds(max_params=850))
    assert [p.sparsity for p in verification_order(CURVE, chosen)] == [0.2, 0.3, 0.4]


def test_verification_tries_one_point_per_sparsity_the_better_one() -> None:
    twins = Curve(dense=DENSE, points=[*CURVE.points, _point(0.2, 14.0, latency_ms=8.0)])
    chosen = select_point(twins, SelectionBounds(max_perplexity=25))
    order = verification_order(twins, chosen)
    assert [(p.sparsity, p.perplexity) for p in order] == [(0.3, 21.0), (0.2, 14.0), (0.1, 12.0)]


def test_the_verification_request_is_plain_json_and_keys_the_same_question_alike() -> None:
    import json

    from core.jobs.verifications import request_key

    chosen = select_point(CURVE, SelectionBounds(max_perplexity=25))
    request = verification_request(CURVE, SelectionBounds(max_perplexity=25), chosen)
    assert json.loads(json.dumps(request)) == request
    assert request["bounds"] == {"max_perplexity": 25}
    assert [c["label"] for c in request["candidates"]] == ["0.3000", "0.2000", "0.1000"]
    again = verification_request(CURVE, SelectionBounds(max_perplexity=25), chosen)
    other = verification_request(CURVE, SelectionBounds(max_perplexity=25.5), chosen)
    assert request_key(again) == request_key(request) != request_key(other)


def test_no_point_verified_names_the_closest_re_measured_point_and_the_bound_it_misses() -> None:
    tried = [
        {"measured": _point(0.3, 30.0).model_dump()},
        {"measured": _point(0.2, 26.0).model_dump()},
        {"measured": _point(0.1, 27.0).model_dump()},
    ]
    message, field = no_point_verified(tried, SelectionBounds(max_perplexity=25), DENSE)
    assert field == "max_perplexity"
    assert "tried 0.3000, 0.2000, 0.1000" in message
    assert "closest is sparsity 0.2000 (misses max_perplexity by 4.0 %)" in message
