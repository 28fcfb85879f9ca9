"""Offline (single-turn) GRPO learns: on dialogue states, rewarded by the known preference's reward model
(tests/learning.py says what the learning tests share)."""

from __future__ import annotations

import json

import pytest
from learning import assert_learned

from benchmarks.preference import addresses_partner, learning_config
from trainers.grpo import train_grpo


@pytest.mark.slow
def test_grpo_on_dialogue_states_raises_the_learned_reward_on_held_out_states(tmp_path):
    """Offline GRPO on the embedded model: the held-out mean reward (states never trained on, same sampling seeds
    before and after) rises clearly, the KL to the starting policy stays bounded, and more held-out samples address
    the partner than before."""
    assert_learned(train_grpo(learning_config("offline", tmp_path / "grpo"), progress=False))
    addressed = {
        t: sum(addresses_partner(x) for x in json.loads((tmp_path / "grpo" / f"eval_{t}.json").read_text())["samples"])
        for t in ("before", "after")
    }
    assert addressed["after"] > addressed["before"], addressed
