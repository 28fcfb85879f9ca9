"""`TextSession`: one learner seat in a `SocialGymEnv`, as chat text. The one layer the trainer shims share
(OpenEnv, verifiers, TRL's `environment_factory`, SkyRL-gym): each maps its framework's calls onto these.

    session = TextSession(partner=partner, reward_fn=reward_fn, max_turns=8)
    chat = session.reset(EpisodeStart("neg-used-bike", seed=3, seat=1))  # system prompt + first observation
    step = session.step("I can do $90 if you deliver it.")   # the partner answers inside
    step.message, step.reward, step.done                     # what the seat perceives next, the env's reward
    session.episode_reward("discounted", gamma=0.9)

What it holds, and nothing more: the seat (from the start), the partner and the reward function (inside the gym
env: the env's `reward_fn` scores each learner utterance, as `SocialGymEnv.step` always does), and the text
rendering (`agents.llm_agent`: the system prompt and the tolerant reply parser; `agents.multiturn.turn_text`: what
happened since the learner's last turn). Episode logic stays in the env. A session a framework reuses across
episodes carries nothing over: `reset` clears the rewards, the observation and the done flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sotopia_env import Action, EpisodeStart, SocialGymEnv
from sotopia_env.policy import Policy

from .llm_agent import SYSTEM_PROMPT, build_messages, parse_reply
from .multiturn import turn_text

Aggregate = Literal["sum", "mean", "discounted"]
AGGREGATES: tuple[str, ...] = ("sum", "mean", "discounted")


def episode_reward(rewards: Sequence[float], how: Aggregate = "sum", gamma: float = 1.0) -> float:
    """One number for an episode from the learner's per-utterance rewards r_0..r_{n-1}: their sum, their mean (0
    for none), or the discounted return sum_k gamma^k r_k from the first turn."""
    if how == "sum":
        return float(sum(rewards))
    if how == "mean":
        return float(sum(rewards) / len(rewards)) if rewards else 0.0
    if how == "discounted":
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], not {gamma}")
        return float(sum(r * gamma**k for k, r in enumerate(rewards)))
    raise ValueError(f"unknown reward aggregate {how!r}; use one of {', '.join(AGGREGATES)}")


@dataclass
class TextStep:
    """What one learner action brought: the text the seat perceives next (the partner's lines since, then the
    closing line), the env's reward of the action, whether the episode ended, and the env's info."""

    message: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)


class TextSession:
    """One learner seat in a `SocialGymEnv` (partner and reward function inside), spoken to in text.

    Keyword arguments go to `SocialGymEnv` (and through it to `SocialParallelEnv`: scenarios, characters, pairings,
    max_turns, ...). Actions are a model's reply text (parsed tolerantly, as every LLM policy here parses), or a
    structured `Action` / action dict, which the env parses strictly."""

    def __init__(
        self,
        partner: Policy | None = None,
        reward_fn: Any = None,
        system_prompt: str = SYSTEM_PROMPT,
        **env_kwargs: Any,
    ) -> None:
        self.env = SocialGymEnv(partner=partner, reward_fn=reward_fn, **env_kwargs)
        self.system_prompt = system_prompt
        self.start: EpisodeStart | None = None
        self.obs: dict[str, Any] = {}
        self.info: dict[str, Any] = {}
        self.rewards: list[float] = []  # the env's reward of each learner action this episode
        self.done = True

    def reset(self, start: EpisodeStart, episode_id: str | None = None) -> list[dict[str, str]]:
        """Start `start`'s episode with the learner in its seat; returns the opening chat (system prompt and the
        seat's first observation, the partner's opening included when the learner sits second)."""
        if start.seat == "both":
            raise ValueError("a text session plays one seat against the partner; give the start seat 0 or 1")
        options = start.options()
        if episode_id is not None:
            options["episode_id"] = episode_id
        self.obs, self.info = self.env.reset(seed=start.seed, options=options)
        self.start, self.rewards, self.done = start, [], False
        return build_messages(self.obs, self.system_prompt)

    @property
    def opening(self) -> str:
        """The seat's first observation of this episode (the user message of `reset`'s chat)."""
        return self.obs["prompt"] if self.obs else ""

    def step(self, action: str | Action | dict[str, Any]) -> TextStep:
        """Play the learner's action; the partner answers inside. A string is a model's reply (`parse_reply`)."""
        if self.start is None:
            raise RuntimeError("call reset(start) before step()")
        if self.done:
            raise RuntimeError("the episode is over; call reset(start) to start another")
        before = self.obs
        if isinstance(action, str):
            action = parse_reply(action, before["name"], self.env.parallel_env.max_utterance_chars)
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.obs, self.info, self.done = obs, info, bool(terminated or truncated)
        self.rewards.append(float(reward))
        return TextStep(turn_text(before, obs), float(reward), self.done, info)

    def episode_reward(self, how: Aggregate = "sum", gamma: float = 1.0) -> float:
        """This episode's learner rewards as one number (`episode_reward`)."""
        return episode_reward(self.rewards, how, gamma)

    @property
    def episode(self):  # noqa: ANN201 - sotopia_env.Episode
        return self.env.episode
