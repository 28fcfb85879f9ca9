"""SkyRL-gym's text env over the text session, registered as "sotopia-social" when this module is imported.

    import skyrl_gym
    import trainers.skyrl_env  # noqa: F401  (registers "sotopia-social")

    env = skyrl_gym.make("sotopia-social", env_config={"partner": "embedded", "reward": "runs/rm/best"},
                         extras={"extra_info": EpisodeStart("neg-used-bike", seed=3, seat=1).to_dict()})
    chat, metadata = env.init(prompt)          # the dataset's prompt is replaced by the seat's opening chat
    out = env.step(model_reply)                # {"observations", "reward", "done", "metadata"}

`env_config` is a `trainers.interop.SessionConfig` as a mapping (SkyRL passes its `environment.skyrl_gym.<env>`
section); the partner and reward model load once per process for all envs of that config. `extras["extra_info"]`
is the row's episode start (`EpisodeStart.to_dict()`). Each step's reward is the env's reward of that learner
utterance (SkyRL places it at the turn's last token); `observations` is the next user turn: what the seat
perceived since its reply (empty once the episode ended). `get_metrics` reports the episode's return and turns.
"""

from __future__ import annotations

from typing import Any

import skyrl_gym
from skyrl_gym.envs.base_text_env import BaseTextEnv, BaseTextEnvStepOutput

from sotopia_env import EpisodeStart

from .interop import SessionConfig, new_session

ENV_ID = "sotopia-social"


class SocialTextEnv(BaseTextEnv):
    """One episode of a learner seat against the partner, in SkyRL-gym's text-env shape."""

    def __init__(self, env_config: Any = None, extras: dict[str, Any] | None = None) -> None:
        super().__init__()
        extras = dict(extras or {})
        self.cfg = SessionConfig.from_mapping(env_config)
        self.start = EpisodeStart.from_dict(extras.get("extra_info") or {})
        self.session = new_session(self.cfg)
        self.max_turns = self.cfg.max_turns

    def init(self, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], dict[str, Any]]:
        chat = self.session.reset(self.start)
        return chat, {"start": self.start.to_dict(), "character": self.session.info["character"]}

    def step(self, action: str) -> BaseTextEnvStepOutput:
        self.turns += 1
        out = self.session.step(action)
        observations = [] if out.done else [{"role": "user", "content": out.message}]
        return BaseTextEnvStepOutput(
            observations=observations,
            reward=out.reward,
            done=out.done,
            metadata={"end_reason": out.info.get("sotopia_episode", {}).get("end_reason", "")},
        )

    def get_metrics(self) -> dict[str, Any]:
        return {
            "episode_return": self.session.episode_reward(),
            "learner_turns": len(self.session.rewards),
        }


if ENV_ID not in skyrl_gym.registry:
    skyrl_gym.register(id=ENV_ID, entry_point="trainers.skyrl_env:SocialTextEnv")
