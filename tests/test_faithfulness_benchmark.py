"""The faithfulness benchmark's paired interval: a ratio of perplexities over the same windows."""

from __future__ import annotations

import math

from benchmarks.faithfulness import paired_ratio


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
