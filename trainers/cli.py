"""The trainers package's commands: `train-rm`, `bc`, `grpo`, `pipeline`. Each takes its config
(trainers.rm_config, bc_config, grpo_config, pipeline); the trainer modules, which import torch, load on use."""

from __future__ import annotations

import json

from .bc_config import BCConfig
from .grpo_config import GRPOConfig
from .pipeline import PipelineConfig
from .rm_config import RMTrainConfig


def train_rm_command(cfg: RMTrainConfig) -> int:
    from .train_reward_model import train_reward_model

    print(json.dumps(train_reward_model(cfg), indent=1))
    return 0


def bc_command(cfg: BCConfig) -> int:
    from .bc import train_bc

    print(json.dumps(train_bc(cfg), indent=1))
    return 0


def grpo_command(cfg: GRPOConfig) -> int:
    from .grpo import train_grpo

    print(json.dumps(train_grpo(cfg), indent=1))
    return 0


def pipeline_command(cfg: PipelineConfig) -> int:
    from .pipeline import run_pipeline

    report = run_pipeline(cfg)
    print("\n" + json.dumps({k: v for k, v in report.items() if k != "verdict"}, indent=1))
    print("\nWhat it shows:")
    for line in report["verdict"]:
        print(f"- {line}")
    print(f"\nThe report with its plots: {cfg.out}/report.md")
    print(f"See the dialogues in a browser: .venv/bin/sotopia-env view {cfg.out}")
    return 0
