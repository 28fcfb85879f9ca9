"""`sotopia-env benchmark` (arguments: sotopia_env/cli_args.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sotopia_env.cli import dataclass_from_args


def benchmark_command(args: argparse.Namespace) -> int:
    from .hard_tasks import BenchmarkConfig, run

    cfg = dataclass_from_args(BenchmarkConfig, args)
    cfg.leaderboard = cfg.leaderboard or None  # --leaderboard '' turns it off
    result = run(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    failures = sum(len(p.failures) for p in result.policies)
    if failures:
        print(f"warning: {failures} episode(s) could not be judged; see 'Judge failures' in the report")
    return 0
