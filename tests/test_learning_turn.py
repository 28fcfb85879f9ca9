"""GRPO in the env with turn credit learns (tests/learning.py says what the learning tests share)."""

from __future__ import annotations

import pytest
from learning import assert_env_grpo_learns


@pytest.mark.slow
def test_grpo_in_the_env_with_turn_credit_raises_the_learned_reward_on_held_out_dialogues(tmp_path):
    assert_env_grpo_learns("turn", tmp_path / "turn")
