"""Command-line entry points of the trainers package (arguments: sotopia_env/cli_args.py)."""

from __future__ import annotations

import argparse
import json

from sotopia_env.cli import dataclass_from_args


def train_rm_command(args: argparse.Namespace) -> int:
    from .reward_model import RMTrainConfig, train_reward_model

    summary = train_reward_model(dataclass_from_args(RMTrainConfig, args))
    print(json.dumps(summary, indent=1))
    return 0


def collect_command(args: argparse.Namespace) -> int:
    from agents.cli import sampling_from_args
    from agents.runner import jobs_for, run_episodes
    from agents.spec import make_policies
    from sotopia_env import split

    scenarios = split(args.split)[: args.scenarios] if args.scenarios else split(args.split)
    jobs = jobs_for(scenarios, args.pairs_per_scenario, args.episodes_per_pair, args.both_seats, seed=args.seed)
    specs = [args.policy, args.partner or args.policy]
    policies = make_policies(specs, sampling_from_args(args, seed=args.seed))
    new = run_episodes(jobs, (policies[0], policies[1]), args.out, batch_size=args.batch_size, env_kwargs={"max_turns": args.max_turns})
    print(f"{len(new)} new episode(s), {len(jobs)} in the plan -> {args.out}")
    return 0


def judge_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agents.spec import make_engine, parse_spec
    from rewards.judge import Judge
    from sotopia_env import read_episodes
    from sotopia_env.episode import episode_ids, write_episode

    out = Path(args.out)
    done = episode_ids(out)
    todo = [e for e in read_episodes(args.episodes) if e.id not in done]
    judge = Judge(make_engine(parse_spec(args.judge)), cache_path=out.parent / "judge_cache.jsonl")
    failed = 0
    for episode in judge.judge_in_batches(todo, args.batch_size):
        failed += bool(episode.judge_failures)
        write_episode(out, episode)
    print(f"judged {len(todo)} episode(s) ({failed} with failures, recorded in judge_failures) -> {out}")
    return 0


def bc_command(args: argparse.Namespace) -> int:
    from .bc import BCConfig, train_bc

    print(json.dumps(train_bc(dataclass_from_args(BCConfig, args)), indent=1))
    return 0


def grpo_command(args: argparse.Namespace) -> int:
    from .grpo import GRPOConfig, train_grpo

    print(json.dumps(train_grpo(dataclass_from_args(GRPOConfig, args)), indent=1))
    return 0


def pipeline_command(args: argparse.Namespace) -> int:
    from .pipeline import PipelineConfig, run_pipeline

    report = run_pipeline(dataclass_from_args(PipelineConfig, args))
    print("\n" + json.dumps(report, indent=1))
    before, after = report["heldout_reward_before_grpo"], report["heldout_reward_after_grpo"]
    print(f"\nheld-out reward-model score: {before:.3f} before GRPO -> {after:.3f} after ({after - before:+.3f})")
    return 0
