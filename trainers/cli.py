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
    print("\n" + json.dumps(report, indent=1))
    before, after = report["heldout_reward_before_grpo"], report["heldout_reward_after_grpo"]
    print(f"\nheld-out reward-model score: {before:.3f} before GRPO -> {after:.3f} after ({after - before:+.3f})")
    return 0
