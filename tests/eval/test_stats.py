"""The paired comparison of two models' CMQA accuracies: exact on a hand example, honest in coverage."""

from __future__ import annotations

import math
import random

import pytest

from core.eval.stats import Z95, mean_interval, paired_mean_difference


def test_identical_predictions_differ_by_nothing() -> None:
    labels = {"a": [True, False, True], "b": [False, False]}
    assert paired_mean_difference(labels, labels) == (0.0, 0.0, 0.0)


def test_hand_computed_example() -> None:
    first = {"a": [1, 1, 0, 0], "b": [1, 1]}
    second = {"a": [0, 1, 0, 1], "b": [0, 0]}
    # task a: d = [1, 0, 0, -1], mean 0, variance 1/2 over 4 items; task b: d = [1, 1], mean 1, variance 0
    difference, low, high = paired_mean_difference(first, second)
    half = Z95 * math.sqrt(0.5 / 4) / 2
    assert difference == pytest.approx(0.5)
    assert (low, high) == pytest.approx((0.5 - half, 0.5 + half))
    assert paired_mean_difference(second, first)[0] == pytest.approx(-0.5)


def test_items_must_pair_up() -> None:
    with pytest.raises(ValueError, match="same items"):
        paired_mean_difference({"a": [True, False]}, {"a": [True]})
    with pytest.raises(ValueError, match="different tasks"):
        paired_mean_difference({"a": [True]}, {"b": [True]})


def test_interval_covers_the_true_difference_and_is_narrower_than_unpaired() -> None:
    """Two models sharing item difficulty (the usual case): ~95 % coverage, narrower than independent intervals."""
    rng = random.Random(0)
    tasks, items, repeats = 7, 100, 1000
    true_difference = 0.05  # first right on 55 % of items; second loses 0.05 / 0.55 of those
    covered, estimated, paired_width, unpaired_width = 0, 0.0, 0.0, 0.0
    for _ in range(repeats):
        first, second = {}, {}
        for task in range(tasks):
            easy = [rng.random() < 0.5 for _ in range(items)]
            first[task] = [e or rng.random() < 0.1 for e in easy]
            second[task] = [f and rng.random() >= true_difference / 0.55 for f in first[task]]
        difference, low, high = paired_mean_difference(first, second)
        covered += low <= true_difference <= high
        estimated += difference
        paired_width += high - low
        for labels in (first, second):
            accuracies = [sum(v) / items for v in labels.values()]
            low_u, high_u = mean_interval(accuracies, [items] * tasks)
            unpaired_width += (
                high_u - low_u
            ) / 2  # two half-widths: where separate intervals stop overlapping
    assert estimated / repeats == pytest.approx(true_difference, abs=0.003)
    # the normal approximation undercovers a little when few items are discordant
    assert 0.91 <= covered / repeats <= 0.98
    assert paired_width < 0.6 * unpaired_width
