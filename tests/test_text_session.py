"""The text session every trainer shim sits on: the seat from the start, the partner and reward inside the gym env,
text in and out; a reused session carries nothing over; batching across threads keeps each caller's results."""

from __future__ import annotations

import threading

import pytest

from agents.batching import BatchedPolicy
from agents.llm_agent import parse_reply
from agents.multiturn import turn_text
from agents.text_session import TextSession, episode_reward
from benchmarks.preference import address_reward
from sotopia_env import EpisodeStart, ScriptedPolicy, SocialGymEnv

PARTNER = ("Hello. What brings you here?", "I see. What do you suggest?", "Fine, go on.")
START = EpisodeStart("neg-used-bike", seed=4, seat=1, characters=("ben_kowalski", "amara_okafor"))
LINES = ("Can you lower the price for me?", '{"action_type": "non-verbal communication", "argument": "shrugs"}', "ok.")


def test_a_session_gives_the_gym_envs_rewards_and_tells_the_seat_only_what_it_perceives():
    session = TextSession(ScriptedPolicy(PARTNER), address_reward, max_turns=6)
    gym_env = SocialGymEnv(ScriptedPolicy(PARTNER), reward_fn=address_reward, max_turns=6)
    chat = session.reset(START)
    obs, _ = gym_env.reset(seed=START.seed, options=START.options())
    assert chat[1]["content"] == obs["prompt"] and PARTNER[0] in obs["prompt"]  # the partner (seat 0) opened
    for line in LINES:
        out = session.step(line)
        before = obs
        obs, reward, terminated, truncated, _ = gym_env.step(parse_reply(line, before["name"]))
        assert out.reward == reward
        assert out.message == turn_text(before, obs)
    assert session.rewards == [10.0, 0.0, 0.0] and out.done
    with pytest.raises(RuntimeError, match="episode is over"):
        session.step("more")
    session.reset(EpisodeStart("neg-used-bike", seed=4, seat=0))
    assert session.rewards == [] and not session.done and session.episode_reward() == 0.0  # nothing carried over


def test_episode_rewards_aggregate_as_documented():
    assert episode_reward([10, 0, 4], "sum") == 14
    assert episode_reward([10, 0, 4], "mean") == pytest.approx(14 / 3)
    assert episode_reward([10, 0, 4], "discounted", gamma=0.5) == 10 + 0 + 4 * 0.25
    assert episode_reward([], "mean") == 0.0
    with pytest.raises(ValueError, match="unknown reward aggregate"):
        episode_reward([1], "max")


def test_a_batched_partner_answers_many_threads_in_one_call_with_each_its_own_action():
    class Counting(ScriptedPolicy):
        calls: list[int] = []

        def act_batch(self, observations, keys=None):
            self.calls.append(len(observations))
            return [f"seat {o['seat']} turn {o['turn']}" for o in observations]

    inner = Counting()
    policy = BatchedPolicy(inner, max_wait_s=0.2)
    barrier, results = threading.Barrier(4), {}

    def ask(k: int) -> None:
        barrier.wait()
        results[k] = policy.act_batch([{"seat": k % 2, "turn": k, "history": ()}], keys=[("ep", k, k % 2)])

    threads = [threading.Thread(target=ask, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inner.calls == [4]
    assert results == {k: [f"seat {k % 2} turn {k}"] for k in range(4)}
