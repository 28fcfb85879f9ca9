"""Command-line entry points of the rewards package (arguments: sotopia_env/cli_args.py)."""

from __future__ import annotations

import argparse

from agents.spec import make_engine, parse_spec

from .attribution import AttributionConfig
from .judge import Judge
from .labeling import label_episodes


def judge_from_spec(spec: str, cache_path: str) -> Judge:
    return Judge(make_engine(parse_spec(spec)), cache_path=cache_path)


def label_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    dims = tuple(d.strip() for d in args.dims.split(",") if d.strip())
    weights = tuple(float(w) for w in args.weights.split(",")) if args.weights else None
    config = AttributionConfig(method=args.method, dims=dims, weights=weights, gamma=args.gamma)
    judge = judge_from_spec(args.judge, str(Path(args.out).parent / "judge_cache.jsonl")) if args.judge else None
    summary = label_episodes(args.episodes, args.out, judge, config, batch_size=args.batch_size)
    print(f"{summary['rows']} labelled utterances from {summary['episodes']} episodes -> {args.out}")
    if summary["failures"]:
        print(f"{len(summary['failures'])} judge/attribution failure(s) (left out): " + "; ".join(summary["failures"][:5]))
    return 0
