"""GRPO in the env with episode credit learns (tests/learning.py says what the learning tests share)."""

from __future__ import annotations

import pytest
from learning import assert_env_grpo_learns


@pytest.mark.slow
def test_grpo_in_the_env_with_episode_credit_raises_the_learned_reward_on_held_out_dialogues(tmp_path):
    assert_env_grpo_learns("episode", tmp_path / "episode")
