"""SkyRL-gym: our text env registered as "sotopia-social", made by skyrl-gym's own `make` and played with a scripted
dialogue; each step's reward is the env's reward of that utterance (the known preference as a rule: 10 when the
utterance addresses the partner)."""

from __future__ import annotations

import skyrl_gym

import trainers.skyrl_env  # noqa: F401  (registers "sotopia-social")
from sotopia_env import EpisodeStart

CONFIG = {
    "partner": "scripted:Hello. What brings you here?|I see. What do you suggest?|Fine, go on.",
    "reward": "benchmarks.preference:address_reward",
    "max_turns": 6,
}
START = EpisodeStart("neg-used-bike", seed=4, seat=1, characters=("ben_kowalski", "amara_okafor"))


def test_skyrl_make_plays_an_episode_with_a_reward_per_turn():
    env = skyrl_gym.make("sotopia-social", env_config=CONFIG, extras={"extra_info": START.to_dict(), "max_turns": 6})
    chat, metadata = env.init([{"role": "user", "content": "ignored: the env opens the chat"}])
    assert [m["role"] for m in chat] == ["system", "user"] and "Hello. What brings you here?" in chat[1]["content"]
    assert metadata["character"] == "amara_okafor"  # seat 1
    outs = [env.step(line) for line in ("Could you tell me more?", "Hmm.", "Will you take 80?")]
    assert [o["reward"] for o in outs] == [10.0, 0.0, 10.0]
    assert [o["done"] for o in outs] == [False, False, True]
    assert "I see. What do you suggest?" in outs[0]["observations"][0]["content"]
    assert "Could you tell me more?" not in outs[0]["observations"][0]["content"]  # its own line is not repeated
    assert outs[-1]["observations"] == []
    assert env.get_metrics() == {"episode_return": 20.0, "learner_turns": 3}


def test_envs_of_one_config_share_the_loaded_partner_and_a_new_env_starts_clean():
    a = skyrl_gym.make("sotopia-social", env_config=CONFIG, extras={"extra_info": START.to_dict()})
    b = skyrl_gym.make("sotopia-social", env_config=CONFIG, extras={"extra_info": START.to_dict()})
    assert a.session.env.partner is b.session.env.partner
    a.init([])
    a.step("Do you agree?")
    b.init([])
    assert b.get_metrics() == {"episode_return": 0.0, "learner_turns": 0}
