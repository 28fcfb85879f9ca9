"""A benchmark's results as data: per policy its dimension means with intervals, the paired comparisons, and what
each interval means. `hard_tasks.run` makes them; `report` writes them as JSON, CSV, markdown and plots."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import Estimate


@dataclass
class PolicyResult:
    spec: str
    planned: int
    judged: int
    dimensions: dict[str, Estimate]  # the seven dimensions and "overall"; intervals resample scenarios, then episodes
    scenarios: dict[str, dict[str, float]]  # scenario -> {"overall", "goal", "n"}
    failures: list[dict[str, str]]  # episodes left out of the means: {"episode", "cell", "reason"}
    unplayed: list[str] = field(default_factory=list)  # cells with no episode (should be empty after a full run)
    dimensions_given_scenarios: dict[str, Estimate] = field(default_factory=dict)  # same means, episodes resampled
    partner: dict[str, Estimate] = field(default_factory=dict)  # the partner's scores (only with judge_partner)
    people: dict[str, Estimate] = field(default_factory=dict)  # people's ratings of the rated episodes (--ratings)
    people_judge: dict[str, Estimate] = field(default_factory=dict)  # the judge's mean on those same episodes


@dataclass
class Comparison:
    policy: str
    baseline: str
    pairs: int
    differences: dict[
        str, Estimate
    ]  # policy minus baseline, per dimension and overall; scenarios, then pairs resampled
    differences_given_scenarios: dict[str, Estimate] = field(default_factory=dict)  # pairs resampled


@dataclass
class BenchmarkResult:
    config: dict[str, Any]
    provenance: dict[str, Any]
    policies: list[PolicyResult]
    comparisons: list[Comparison]
    scores: dict[str, dict[str, dict[str, float]]] = field(repr=False, default_factory=dict)  # spec -> cell key -> dims

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "provenance": self.provenance,
            "intervals": INTERVALS,
            "policies": [asdict(p) for p in self.policies],
            "comparisons": [asdict(c) for c in self.comparisons],
        }

    def results_dict(self) -> dict[str, Any]:
        """The numbers alone (no provenance): equal for equal runs, whatever the clock or machine."""
        d = self.to_dict()
        return {"policies": d["policies"], "comparisons": d["comparisons"]}


INTERVALS = {  # what each interval in report.json means
    "dimensions": "95% two-stage bootstrap: scenarios resampled, then episodes within each; for claims across scenarios",
    "dimensions_given_scenarios": "95% bootstrap over episodes: conditional on this scenario set",
    "differences": "95% two-stage bootstrap of paired differences: scenarios resampled, then pairs within each",
    "differences_given_scenarios": "95% bootstrap over pairs: conditional on this scenario set",
}
