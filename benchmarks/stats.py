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


# --- agreement between the judge and people ---------------------------------------------------------


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's r; NaN when either side has no spread (or fewer than two pairs)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size != b.size:
        raise ValueError(f"pearson needs pairs: {a.size} values against {b.size}")
    if a.size < 2:
        return float("nan")
    da, db = a - a.mean(), b - b.mean()
    denominator = np.sqrt((da * da).sum() * (db * db).sum())
    return float((da * db).sum() / denominator) if denominator > 0 else float("nan")


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (as Spearman's rho needs)."""
    a = np.asarray(x, dtype=float)
    order = np.argsort(a, kind="mergesort")
    out = np.empty(a.size)
    sorted_values = a[order]
    start = 0
    while start < a.size:
        end = start
        while end + 1 < a.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        out[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the (tie-averaged) ranks."""
    return pearson(ranks(x), ranks(y))


def bootstrap_correlation(
    x: Sequence[float], y: Sequence[float], method: str = "pearson", resamples: int = 2000, seed: int = 0, level=0.95
) -> Estimate:
    """The correlation of the pairs and a percentile-bootstrap interval over pairs (a resample with no spread on
    one side has no correlation and is left out of the interval)."""
    _check(resamples, level)
    corr = {"pearson": pearson, "spearman": spearman}.get(method)
    if corr is None:
        raise ValueError(f"method must be pearson or spearman, not {method!r}")
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    value = corr(a, b)
    if a.size < 2:
        return Estimate(value, float("nan"), float("nan"), int(a.size))
    picks = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    values = np.array([corr(a[p], b[p]) for p in picks])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return Estimate(value, float("nan"), float("nan"), int(a.size))
    low, high = np.quantile(values, [(1 - level) / 2, 1 - (1 - level) / 2])
    return Estimate(value, float(low), float(high), int(a.size))


def krippendorff_alpha_interval(units: Mapping[str, Sequence[float]]) -> tuple[float, int, int]:
    """Krippendorff's alpha for interval data, with (pairable units, pairable values). `units` maps each rated
    unit (an episode's seat on one dimension) to its raters' values; units with fewer than two values cannot be
    paired and are left out. alpha = 1 - D_o / D_e, where, over the n pairable values,
    D_o = (1/n) sum_u 1/(m_u - 1) sum_{i != j in u} (v_i - v_j)^2 and
    D_e = 1/(n (n - 1)) sum_{i != j over all} (v_i - v_j)^2. NaN when nothing is pairable or no value differs."""
    pairable = [np.asarray(v, dtype=float) for v in units.values() if len(v) >= 2]
    if not pairable:
        return float("nan"), 0, 0
    n = sum(v.size for v in pairable)

    def squared_differences(v: np.ndarray) -> float:  # sum over ordered pairs i != j of (v_i - v_j)^2
        return float(2 * v.size * (v * v).sum() - 2 * v.sum() ** 2)

    observed = sum(squared_differences(v) / (v.size - 1) for v in pairable) / n
    expected = squared_differences(np.concatenate(pairable)) / (n * (n - 1))
    alpha = 1 - observed / expected if expected > 0 else float("nan")
    return float(alpha), len(pairable), n
