"""Confidence intervals for accuracies, so small `--limit` runs show how little they can resolve.

Per-task accuracies use the Wilson score interval (95%): unlike the normal approximation it stays
inside [0, 1] and behaves at 0 or n successes and for the small n that quick runs use. The mean
over tasks uses a normal approximation of the unweighted mean of independent task accuracies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054
INTERVAL_METHOD = "wilson"
MEAN_INTERVAL_METHOD = "normal approximation of the unweighted mean of independent task accuracies"


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there are no items."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= n else min(1.0, centre + half)
    return (low, high)


def mean_interval(accuracies: Sequence[float], counts: Sequence[int], z: float = Z95) -> tuple[float, float]:
    """Interval of the unweighted mean of task accuracies: var = sum p(1-p)/n / T^2."""
    if not accuracies:
        return (0.0, 1.0)
    t = len(accuracies)
    mean = sum(accuracies) / t
    variance = sum(p * (1 - p) / max(n, 1) for p, n in zip(accuracies, counts, strict=True)) / (t * t)
    half = z * math.sqrt(variance)
    return (max(0.0, mean - half), min(1.0, mean + half))
