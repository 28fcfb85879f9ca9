"""Statistics of the policy benchmark: means with percentile-bootstrap confidence intervals, and paired
differences between policies. Pure numpy; every function is deterministic given its seed.

Two intervals answer two questions. `bootstrap_ci` resamples episodes: it is conditional on the scenario
set, i.e. how precisely these runs measured the policy on exactly these scenarios. `clustered_bootstrap_ci`
resamples scenarios, then episodes within each chosen scenario (a two-stage bootstrap): episodes of one
scenario are not independent draws, so a claim about scenarios like these needs the scenario-to-scenario
variation in the interval too."""

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
    clusters: int | None = None  # scenarios resampled in the first stage; None: episodes resampled alone

    def __str__(self) -> str:
        return "n/a" if self.n == 0 else f"{self.mean:.2f} [{self.low:.2f}, {self.high:.2f}]"


def bootstrap_ci(values: Sequence[float], resamples: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """The mean of `values` and a percentile-bootstrap interval: resample the units with replacement
    `resamples` times, take each resample's mean, and cut the (1 - level) / 2 tails off that distribution."""
    _check(resamples, level)
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size))


def clustered_bootstrap_ci(
    groups: Mapping[str, Sequence[float]], resamples: int = 2000, seed: int = 0, level: float = 0.95
) -> Estimate:
    """The mean over all values of all groups, and a two-stage percentile-bootstrap interval: each resample
    draws as many groups as there are, with replacement, then within every drawn group as many values as it
    holds, with replacement; its statistic is the mean of all values drawn. Empty groups are left out."""
    _check(resamples, level)
    clusters = [np.asarray(v, dtype=float) for _, v in sorted(groups.items()) if len(v)]
    if not clusters:
        return Estimate(float("nan"), float("nan"), float("nan"), 0, 0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clusters), size=(resamples, len(clusters)))
    sums, counts = np.zeros(resamples), np.zeros(resamples)
    rows = np.arange(resamples)
    for c, values in enumerate(clusters):
        times = (picks == c).sum(axis=1)  # how often each resample drew this group
        draws = values[rng.integers(0, values.size, size=int(times.sum()) * values.size)]
        sums += np.bincount(np.repeat(rows, times * values.size), weights=draws, minlength=resamples)
        counts += times * values.size
    low, high = np.quantile(sums / counts, [(1 - level) / 2, 1 - (1 - level) / 2])
    everything = np.concatenate(clusters)
    return Estimate(float(everything.mean()), float(low), float(high), int(everything.size), len(clusters))


def paired_difference(
    a: Mapping[str, float],
    b: Mapping[str, float],
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    cluster_of: Mapping[str, str] | None = None,
) -> Estimate:
    """Mean of a[k] - b[k] over the keys both have (one key per scenario, pairing, seat and repeat), with
    a bootstrap interval over those pairs. Pairing removes the variance that scenarios and seats add to
    each policy's score. cluster_of (key -> scenario): resample scenarios, then pairs within them, as
    `clustered_bootstrap_ci` does; without it the interval is conditional on the scenario set."""
    keys = sorted(set(a) & set(b))
    differences = {k: a[k] - b[k] for k in keys}
    if cluster_of is None:
        return bootstrap_ci(list(differences.values()), resamples, seed, level)
    return clustered_bootstrap_ci(group_values(differences, cluster_of), resamples, seed, level)


def group_values(values: Mapping[str, float], group_of: Mapping[str, str]) -> dict[str, list[float]]:
    """The values per group (e.g. per scenario), groups in sorted order, values in key order."""
    groups: dict[str, list[float]] = {}
    for key in sorted(values):
        groups.setdefault(group_of[key], []).append(values[key])
    return dict(sorted(groups.items()))


def group_means(values: Mapping[str, float], group_of: Mapping[str, str]) -> dict[str, tuple[float, int]]:
    """Mean and count of the values per group (e.g. per scenario), groups in sorted order."""
    return {g: (float(np.mean(v)), len(v)) for g, v in group_values(values, group_of).items()}


def _check(resamples: int, level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), not {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
