"""GRPO for social dialogue: which loop a run takes. The config is `GRPOConfig` (trainers/grpo_config.py), the
math `trainers/grpo_math.py`, the policy and its one update `trainers/learner.py`; the loops:

- `--rollout states` (trainers/offline.py): Sotopia-RL's single-turn GRPO, G replies per recorded dialogue state;
- `--rollout env` (trainers/online.py): on-policy dialogues in the env, the env's reward model rewarding each
  utterance, with `turn` or `episode` credit.

    sotopia-env grpo --reward-model runs/rm/best --rollout env --credit turn --steps 50
"""

from __future__ import annotations

import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from sotopia_env.provenance import check_same_settings
from trainers import distributed
from trainers.grpo_config import NOT_COMPARED, GRPOConfig
from trainers.offline import train_offline
from trainers.online import train_online
from trainers.rollout_engines import check_given_engine


def train_grpo(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """Run GRPO as configured; returns the summary (also in OUT/summary.json).

    rollout_engine: with `engine="vllm"`, a ready `VLLMEngine` on the same base model to use (and leave
    open) instead of starting one; its adapter is replaced as training goes."""
    cfg.validate()  # fields may have been set after construction
    check_given_engine(cfg, rollout_engine)  # before any model loads
    distributed.setup()  # before any model loads: under a launcher each rank's models go to its own GPU
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    distributed.on_main(
        lambda: check_same_settings(
            out, out / "config.json", asdict(cfg), ignore=NOT_COMPARED, override=cfg.resume_anyway
        )
    )
    loop = train_online if cfg.rollout == "env" else train_offline
    return loop(cfg, progress=progress, rollout_engine=rollout_engine)
