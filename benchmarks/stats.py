"""Statistics of the policy benchmark: means with percentile-bootstrap confidence intervals, and paired
differences between policies. Pure numpy; every function is deterministic given its seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean over n units with its confidence interval [low, high] (NaN when n == 0)."""

    mean: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return "n/a" if self.n == 0 else f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_ci(values: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """The mean of `values` and a percentile-bootstrap interval: resample the units with replacement
    `resamples` times, take each resample's mean, and cut the (1 - level) / 2 tails off that distribution."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], resamples: int = 2000, seed: int = 0,
                      level: float = 0.95) -> Estimate:
    """Mean of a[k] - b[k] over the keys both have (one key per scenario, pairing, seat and repeat), with
    a bootstrap interval over those pairs. Pairing removes the variance that scenarios and seats add."""
    keys = sorted(set(a) & set(b))
    return bootstrap_ci([a[k] - b[k] for k in keys], resamples, seed, level)


def group_means(values: Mapping[str, float], group_of: Mapping[str, str]) -> dict[str, tuple[float, int]]:
    """Mean and count of the values per group (e.g. per scenario), groups in sorted order."""
    groups: dict[str, list[float]] = {}
    for key, value in values.items():
        groups.setdefault(group_of[key], []).append(value)
    return {g: (float(np.mean(v)), len(v)) for g, v in sorted(groups.items())}
