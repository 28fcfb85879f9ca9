"""Gymnasium's own wrappers run whole episodes on our env: `RecordEpisodeStatistics` (the wrapper CleanRL puts on
every env; it asserts that the env does not write `info["episode"]`, the key it owns), `TimeLimit`, and
`gymnasium.make_vec(..., vectorization_mode="sync")`. Scripted partner, no reward model: a length reward."""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium.wrappers import RecordEpisodeStatistics, TimeLimit

import sotopia_env  # noqa: F401  (registers sotopia_env/Social-v0)
from sotopia_env import EpisodeStart, ScriptedPolicy

PARTNER = ScriptedPolicy(["Hi, what brings you here?", "I see.", "Fine."])
START = EpisodeStart("neg-used-bike", seed=3, seat=0, characters=("ben_kowalski", "amara_okafor"))


def length_reward(context) -> float:
    return len(context.action.argument) / 10


def make(**kwargs):
    return gymnasium.make("sotopia_env/Social-v0", partner=PARTNER, reward_fn=length_reward, max_turns=6, **kwargs)


def test_record_episode_statistics_sums_the_learners_rewards_and_our_summary_has_its_own_key():
    env = RecordEpisodeStatistics(make())
    lines = ["Hello there.", "I can offer ninety dollars.", "Deal?"]
    for _ in range(2):  # a second episode: the wrapper's counters start afresh
        env.reset(seed=START.seed, options=START.options())
        for k, line in enumerate(lines):
            _, _, terminated, truncated, info = env.step(line)
            assert (terminated or truncated) == (k == len(lines) - 1)
        assert info["episode"]["r"] == sum(len(x) / 10 for x in lines)
        assert info["episode"]["l"] == 3
        assert info["sotopia_episode"]["end_reason"] == "turn_limit"
        assert info["sotopia_episode"]["return"] == info["episode"]["r"]


def test_time_limit_truncates_an_episode_before_the_envs_own_limit():
    env = TimeLimit(make(), max_episode_steps=2)
    env.reset(seed=1, options=START.options())
    _, _, terminated, truncated, _ = env.step("One.")
    assert not (terminated or truncated)
    _, _, terminated, truncated, _ = env.step("Two.")
    assert truncated and not terminated


def test_make_vec_sync_runs_whole_episodes_with_autoreset():
    envs = gymnasium.make_vec(
        "sotopia_env/Social-v0",
        num_envs=2,
        vectorization_mode="sync",
        wrappers=[RecordEpisodeStatistics],
        vector_kwargs={"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP},
        partner=PARTNER,
        reward_fn=length_reward,
        max_turns=4,
    )
    obs, _ = envs.reset(seed=0)
    assert obs["your_turn"].tolist() == [1, 1]
    speak = {"action_type": np.zeros(2, dtype=np.int64), "argument": ("Hello.", "Hi there.")}  # the batched space
    ended = np.zeros(2, dtype=bool)
    for _ in range(2):
        _, rewards, terminated, truncated, infos = envs.step(speak)
        assert rewards.tolist() == [0.6, 0.9]
        ended |= terminated | truncated
    assert ended.all()  # max_turns 4: two learner turns end each episode
    assert infos["episode"]["r"].tolist() == [1.2, 1.8]
    _, rewards, *_ = envs.step(speak)  # next-step autoreset: a fresh episode, no reward
    assert rewards.tolist() == [0.0, 0.0]
    envs.close()


def test_a_reset_takes_the_seat_and_episode_id_from_an_episode_start():
    env = make()
    start = EpisodeStart("neg-used-bike", seed=2, seat=1, characters=("ben_kowalski", "amara_okafor"))
    obs, info = env.reset(seed=start.seed, options={**start.options(), "episode_id": "ep-7"})
    assert obs["seat"] == 1 and info["character"] == "amara_okafor"
    assert obs["history"][0]["argument"] == "Hi, what brings you here?"  # the partner (seat 0) opened
    assert env.unwrapped.episode.id == "ep-7"
