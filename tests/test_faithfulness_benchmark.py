"""The faithfulness benchmark's helpers: the paired interval, narrowing a run, reusing measured losses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks.faithfulness import (
    GROUPS,
    _arm_sparsities,
    _cached_losses,
    _check_narrowing,
    _members,
    paired_ratio,
)


def test_a_constant_loss_difference_gives_its_exact_ratio_with_no_spread() -> None:
    a = [2.0, 3.5, 1.25, 4.0]
    result = paired_ratio([x + 0.1 for x in a], a, resamples=200)
    assert math.isclose(result["ratio"], math.exp(0.1))
    assert math.isclose(result["low"], math.exp(0.1)) and math.isclose(result["high"], math.exp(0.1))


def test_the_interval_covers_the_ratio_and_widens_with_noisier_differences() -> None:
    base = [float(i % 7) for i in range(200)]
    calm = paired_ratio([x + (0.05 if i % 2 else -0.03) for i, x in enumerate(base)], base, resamples=500)
    noisy = paired_ratio([x + (0.5 if i % 2 else -0.48) for i, x in enumerate(base)], base, resamples=500)
    for result in (calm, noisy):
        assert result["low"] <= result["ratio"] <= result["high"]
    assert noisy["high"] - noisy["low"] > 5 * (calm["high"] - calm["low"])


def test_narrowing_a_group_to_some_methods_keeps_gisp_whose_ratios_every_row_is() -> None:
    narrowed = [arm.name for arm in _members(GROUPS["refit"], "wanda-sp, flap")]
    assert narrowed == ["gisp", "wanda-sp", "flap"]
    assert [arm.name for arm in _members(GROUPS["refit"], None)] == [arm.name for arm in GROUPS["refit"]]


def test_arm_sparsities_name_some_arms_and_leave_the_others_at_every_target() -> None:
    assert _arm_sparsities("flap=0.2; wanda-sp=0.5,0.3,0.4") == {"flap": [0.2], "wanda-sp": [0.3, 0.4, 0.5]}
    assert _arm_sparsities(None) == {}


def test_a_longer_cached_measurement_serves_a_shorter_one_by_its_first_windows(tmp_path: Path) -> None:
    (tmp_path / "dense-8.json").write_text(
        json.dumps({"wikitext2-test": list(range(8)), "c4": list(range(8))})
    )
    (tmp_path / "dense-shifted-8.json").write_text(json.dumps({"wikitext2-test": [9.0] * 8, "c4": [9.0] * 8}))
    assert _cached_losses(tmp_path, "dense", {"wikitext2-test": 8, "c4": 3}) == {
        "wikitext2-test": list(range(8)),
        "c4": [0, 1, 2],
    }
    assert _cached_losses(tmp_path, "dense", {"wikitext2-test": 16, "c4": 3}) is None


def test_a_narrowing_naming_no_arm_or_an_unmeasured_target_is_refused() -> None:
    groups = {"refit": GROUPS["refit"]}
    _check_narrowing({"flap": [0.2]}, groups, [0.2, 0.5])
    with pytest.raises(SystemExit, match="no arm 'flapp'"):
        _check_narrowing({"flapp": [0.2]}, groups, [0.2, 0.5])
    with pytest.raises(SystemExit, match="must be among --sparsities"):
        _check_narrowing({"flap": [0.6]}, groups, [0.2, 0.5])
