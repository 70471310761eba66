"""Confidence intervals for accuracies, so small `--limit` runs show how little they can resolve.

Per-task accuracies use the Wilson score interval (95%): unlike the normal approximation it stays
inside [0, 1] and behaves at 0 or n successes and for the small n that quick runs use. The mean
over tasks uses a normal approximation of the unweighted mean of independent task accuracies.
Two models scored on the same items are compared by the paired difference of their mean accuracies:
an item's difficulty is shared, so the interval is far narrower than two independent ones would suggest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

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


def paired_mean_difference(
    first: Mapping[str, Sequence[bool]], second: Mapping[str, Sequence[bool]], z: float = Z95
) -> tuple[float, float, float]:
    """(difference, low, high) of the unweighted task-mean accuracy, ``first`` minus ``second``.

    Both map each task to per-item correctness on the same items in the same order. Per task the item
    differences d_i in {-1, 0, 1} have mean d and variance s^2 (over n items); the task-mean difference has
    variance sum s^2 / n / T^2 under the normal approximation, as ``mean_interval``.
    """
    if set(first) != set(second):
        raise ValueError(f"different tasks: {sorted(first)} against {sorted(second)}")
    if not first:
        raise ValueError("no tasks to compare")
    means, variance = [], 0.0
    for task, a in first.items():
        b = second[task]
        if len(a) != len(b) or not a:
            raise ValueError(
                f"{task}: {len(a)} items against {len(b)}; a paired difference needs the same items"
            )
        differences = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
        mean = sum(differences) / len(differences)
        means.append(mean)
        variance += (sum(d * d for d in differences) / len(differences) - mean * mean) / len(differences)
    t = len(means)
    difference = sum(means) / t
    half = z * math.sqrt(variance) / t
    return (difference, difference - half, difference + half)
