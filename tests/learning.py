"""What the GRPO learning tests share (tests/test_learning_*.py, one test a file so that under `--dist loadfile`
each long run is a unit of work of its own, started first by tests/conftest.py).

Each runs GRPO from a fresh LoRA on the embedded model with benchmarks.preference.learning_config (the learning
benchmark's settings too), rewarded by the known preference's reward model (an utterance that addresses the partner
scores 10, else 0; committed, since learning it takes 300+ steps), and asks that the held-out reward rise by
LEARNING_MARGIN."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.runner import load_pool
from benchmarks.preference import BRIEF_LIBRARY, LEARNING, learning_config
from sotopia_env import read_episodes
from trainers.grpo import train_grpo

# By how much the learning runs must raise the preference model's held-out reward: labels are 0 / 10, so a tenth
# of the scale.
LEARNING_MARGIN = 1.0


def assert_learned(summary: dict[str, Any]) -> None:
    """The held-out reward rose by the margin and the KL to the starting policy stayed bounded."""
    before, after = summary["heldout_reward_before"], summary["heldout_reward_after"]
    assert after >= before + LEARNING_MARGIN, summary
    assert 0 < summary["max_kl"] < 0.5, summary


def assert_env_grpo_learns(credit: str, out: Path) -> None:
    """GRPO in the env with `credit` ("turn" or "episode"), rewarded by the env's reward model (the preference's):
    the held-out on-policy reward (episodes in scenarios kept out of training, same starts and seeds before and
    after) rises clearly, and the KL stays bounded; each step trains 16 utterances (learning_config's sizes)."""
    assert_learned(train_grpo(learning_config(credit, out), progress=False))
    library = {s.id for s in load_pool(BRIEF_LIBRARY)[0].values()}
    trained = {e.scenario.id for e in read_episodes(out / "episodes.jsonl")}
    evaluated = {e.scenario.id for e in read_episodes(out / "eval_after.jsonl")}
    assert trained | evaluated <= library and not trained & evaluated  # the library's scenarios, held out apart
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["trained_utterances"] for r in rows] == [16] * LEARNING["steps"]
