"""Benchmarks: policies on the hard tasks (`run`, `sotopia-env benchmark`), and the speed benchmarks run as
`python -m benchmarks.<name>` (env_overhead, rollout_throughput, reward_throughput, judge_throughput, seed_stability,
grpo_vs_trl)."""

from .hard_tasks import BenchmarkConfig, Cell, plan, run, summarize
from .outcomes import BenchmarkResult, Comparison, PolicyResult
from .stats import Estimate, bootstrap_ci, paired_difference

__all__ = [
    "BenchmarkConfig",
    "BenchmarkResult",
    "Cell",
    "Comparison",
    "Estimate",
    "PolicyResult",
    "bootstrap_ci",
    "paired_difference",
    "plan",
    "run",
    "summarize",
]
