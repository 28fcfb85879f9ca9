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
