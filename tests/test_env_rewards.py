"""The env's reward protocol: a batch form scores many utterances in one call with the numbers of one-at-a-time
scoring; `would_earn` scores candidates through the same contexts `step` uses; episode credit's arithmetic."""

from __future__ import annotations

import pytest

from sotopia_env import SocialParallelEnv, SocialVectorEnv, step_envs
from sotopia_env.policy import ScriptedPolicy
from trainers.online import position_advantages, returns_to_go


class LengthReward:
    """Reward = characters in the utterance + 100 x seat + turn: distinguishes contexts. Counts its calls."""

    def __init__(self, batched: bool) -> None:
        self.calls: list[int] = []  # contexts per call
        if batched:
            self.batch = self._batch

    def _score(self, c) -> float:
        return len(c.action.argument) + 100 * c.seat + c.turn

    def __call__(self, context) -> float:
        self.calls.append(1)
        return self._score(context)

    def _batch(self, contexts) -> list[float]:
        self.calls.append(len(contexts))
        return [self._score(c) for c in contexts]


def play(envs, lines):
    results = []
    for k, env in enumerate(envs):
        env.reset(seed=k, options={"scenario": "neg-used-bike"})
    for line in lines:
        actions = [{env.active_agents[0]: f"{line} {k}"} for k, env in enumerate(envs)]
        results.append(step_envs(envs, actions))
    return results


def test_a_round_across_envs_is_scored_in_one_batch_call_with_the_numbers_of_separate_steps():
    batched, single = LengthReward(batched=True), LengthReward(batched=False)
    together = [SocialParallelEnv(reward_fn=batched, max_turns=6) for _ in range(3)]
    apart = [SocialParallelEnv(reward_fn=single, max_turns=6) for _ in range(3)]
    lines = ["Hello there.", "Hi, what do you need?", "A fair price."]
    got = play(together, lines)
    for k, env in enumerate(apart):
        env.reset(seed=k, options={"scenario": "neg-used-bike"})
    want = [[env.step({env.active_agents[0]: f"{line} {k}"}) for k, env in enumerate(apart)] for line in lines]
    assert [[r[1] for r in round_] for round_ in got] == [[r[1] for r in round_] for round_ in want]
    assert batched.calls == [3, 3, 3]  # one call per round for the three envs
    assert single.calls == [1] * 9
    # Seat 1 spoke at turn 1: 100 + 1 + len("Hi, what do you need? 2")
    assert got[1][2][1]["agent_1"] == 100 + 1 + len("Hi, what do you need? 2")


def test_would_earn_gives_the_reward_step_then_gives_and_plays_nothing():
    fn = LengthReward(batched=True)
    env = SocialParallelEnv(reward_fn=fn, max_turns=6)
    env.reset(seed=0, options={"scenario": "neg-used-bike"})
    env.step({"agent_0": "Hello."})
    candidates = ["Short.", "A much longer candidate reply.", {"action_type": "none"}]
    earned = env.would_earn("agent_1", candidates)
    assert earned == [100 + 1 + 6, 100 + 1 + 30, 0.0]
    assert len(env.episode.turns) == 1 and fn.calls == [1, 2]  # nothing played; one call for both speech actions
    _, rewards, *_ = env.step({"agent_1": candidates[1]})
    assert rewards["agent_1"] == earned[1]
    with pytest.raises(ValueError, match="not 'agent_1'"):
        env.would_earn("agent_1", ["It is not my turn."])
    with pytest.raises(ValueError, match="no reward_fn"):
        SocialParallelEnv().would_earn("agent_0", ["x"])


def test_the_vector_env_scores_its_sub_envs_round_in_one_call():
    fn = LengthReward(batched=True)
    partner = ScriptedPolicy(["Sure.", "Fine by me."])
    vec = SocialVectorEnv(num_envs=3, partner=partner, reward_fn=fn, max_turns=6, learner_seat=0)
    vec.reset(seed=0)
    fn.calls.clear()
    _, rewards, *_ = vec.step(["One.", "Two!", "Three?"])
    # The learners' three utterances in one call, then the partners' three in one call.
    assert fn.calls == [3, 3]
    assert list(rewards) == [len("One."), len("Two!"), len("Three?")]


def test_returns_to_go_discount_the_learners_later_rewards():
    assert returns_to_go([1.0, 0.0, 2.0], 0.5) == [1.0 + 0.5 * 0.0 + 0.25 * 2.0, 0.0 + 0.5 * 2.0, 2.0]
    assert returns_to_go([1.0, 2.0], 1.0) == [3.0, 2.0]
    assert returns_to_go([], 0.9) == []


def test_episode_credit_normalises_each_turn_position_over_the_episodes_that_reached_it():
    returns = [[3.0, 1.0, 5.0], [1.0, 3.0], [2.0]]
    adv = position_advantages(returns)
    # Position 0: (3, 1, 2), mean 2, sample std 1. Position 1: (1, 3), mean 2, std sqrt(2). Position 2: one episode.
    s2 = 2**0.5
    assert adv[0] == pytest.approx([1 / 1.0001, -1 / (s2 + 1e-4), 0.0])
    assert adv[1] == pytest.approx([-1 / 1.0001, 1 / (s2 + 1e-4)])
    assert adv[2] == pytest.approx([0.0])
