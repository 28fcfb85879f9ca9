"""The single-agent views when the partner ends an episode before the learner's first move."""

from __future__ import annotations

from typing import Any

import pytest

from sotopia_env import Action, ActionType, ScriptedPolicy, SocialGymEnv, SocialVectorEnv
from sotopia_env.episode import read_episodes

OPTIONS = {"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")}


class LeavesOnSomeOpenings:
    """A partner in seat 0 that leaves at its opening move in the episodes numbered in `leave_on` (counting
    the openings it is asked for), and otherwise says "Fine." every turn."""

    model_name = "leaves-on-some-openings"

    def __init__(self, leave_on: set[int]) -> None:
        self.leave_on = leave_on
        self.openings = 0

    def act(self, observation: dict[str, Any]) -> Any:
        if not observation["history"]:
            opening, self.openings = self.openings, self.openings + 1
            if opening in self.leave_on:
                return Action(ActionType.leave)
        return "Fine."


def test_gym_reset_starts_afresh_when_the_partner_left_before_the_learners_first_move(tmp_path):
    path = tmp_path / "episodes.jsonl"
    env = SocialGymEnv(partner=LeavesOnSomeOpenings({0}), learner_seat=1, episodes_path=path)
    obs, info = env.reset(seed=0, options=OPTIONS)
    assert obs["your_turn"] == 1 and obs["history"] == ({"speaker": 0, "action_type": 0, "argument": "Fine."},)
    assert info["restarts"] == 1
    obs, reward, terminated, truncated, info = env.step("Hello, is the bike still for sale?")
    assert not terminated and not truncated and [h["argument"] for h in obs["history"]][-1] == "Fine."
    [skipped] = read_episodes(path)  # the episode the partner ended is recorded, not lost
    assert skipped.end_reason == "leave" and [(t.agent, t.action_type) for t in skipped.turns] == [("agent_0", "leave")]
    assert skipped.id != env.episode.id


def test_gym_reset_raises_a_clear_error_when_the_partner_always_leaves_first():
    env = SocialGymEnv(partner=ScriptedPolicy([]), learner_seat=1, max_restarts=2)
    with pytest.raises(RuntimeError, match=r"ended 3 episodes in a row before the learner in agent_1 could act"):
        env.reset(seed=0, options=OPTIONS)


def test_a_learner_in_seat_1_that_could_never_act_is_rejected_when_the_env_is_built():
    with pytest.raises(ValueError, match="with max_turns=1 the learner in seat 1 never gets a turn"):
        SocialGymEnv(learner_seat=1, max_turns=1)
    with pytest.raises(ValueError, match="with max_turns=1 the learner in seat 1 never gets a turn"):
        SocialVectorEnv(2, learner_seat="random", max_turns=1)


def test_vector_reset_and_autoreset_never_hand_back_an_episode_the_partner_already_ended(tmp_path):
    path = tmp_path / "episodes.jsonl"
    # Openings 0 and 1 are the two sub-envs' first episodes; 0 is left at once and restarted as opening 2.
    # Sub-env 0's learner then leaves; its autoreset gets opening 3, left at once, restarted as opening 4.
    partner = LeavesOnSomeOpenings({0, 3})
    venv = SocialVectorEnv(2, partner=partner, learner_seat=1, episodes_path=path)
    obs, infos = venv.reset(seed=0, options=OPTIONS)
    assert obs["your_turn"].tolist() == [1, 1] and infos["restarts"].tolist() == [1, 0]
    assert partner.openings == 3
    _, _, terminated, _, _ = venv.step([{"action_type": "leave"}, "Hello."])
    assert terminated.tolist() == [True, False]
    obs, rewards, terminated, truncated, infos = venv.step(["ignored: this step resets sub-env 0", "Still here."])
    assert terminated.tolist() == [False, False] and truncated.tolist() == [False, False]
    assert obs["your_turn"].tolist() == [1, 1] and partner.openings == 5
    assert infos["restarts"][0] == 1 and infos["_restarts"].tolist() == [True, False]
    assert [h["argument"] for h in obs["history"][0]] == ["Fine."]  # the fresh episode's opening, live
    assert venv.envs[0].agents == ["agent_0", "agent_1"]
    obs, _, terminated, _, _ = venv.step(["My first words here.", "And more."])  # the new episode plays on
    assert terminated.tolist() == [False, False] and obs["history"][0][1]["argument"] == "My first words here."
    ended = read_episodes(path)
    assert [(e.end_reason, [t.agent for t in e.turns]) for e in ended] == [
        ("leave", ["agent_0"]),  # opening 0: the partner left at once
        ("leave", ["agent_0", "agent_1"]),  # opening 2: the learner left
        ("leave", ["agent_0"]),  # opening 3: the partner left at once
    ]
