"""Single-agent views of `SocialParallelEnv`: `SocialGymEnv` (gymnasium.Env) and `SocialVectorEnv`.

One learning agent holds a seat; the partner is a `Policy` inside the env. `step(utterance)` plays the
learner's action, then the partner's turns, until it is the learner's turn again or the episode ends.
The vector env does this for many episodes at once and calls the partner once per round for all of
them (`act_batch`), so an LLM partner generates in batches too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from . import observation as obs_lib
from .env import SocialParallelEnv
from .policy import Policy, ScriptedPolicy, act_batch

DEFAULT_PARTNER_LINES = (
    "Hi, good to see you. What did you want to talk about?",
    "I understand. What would work best for you?",
    "Let me think about that for a moment.",
    "That sounds fair to me. Shall we settle on it?",
)


@dataclass
class _Match:
    """One episode seen from the learner's seat, and what the learner should get back next."""

    env: SocialParallelEnv
    learner: str = "agent_0"
    obs: dict[str, Any] = field(default_factory=dict)  # learner's latest observation
    partner_obs: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False

    @property
    def partner(self) -> str:
        return "agent_1" if self.learner == "agent_0" else "agent_0"

    @property
    def live(self) -> bool:
        return bool(self.env.agents)

    def start(self, learner: str, seed: int | None, options: dict[str, Any] | None) -> None:
        self.learner = learner
        obs, infos = self.env.reset(seed=seed, options=options)
        self._take(obs, {}, {}, {}, infos)

    def needs_partner(self) -> bool:
        """The partner must act before the learner can (round-robin, partner's turn)."""
        return self.live and self.learner not in self.env.active_agents

    def play(self, actions: dict[str, Any]) -> None:
        self._take(*self.env.step(actions))

    def _take(self, obs: dict, rewards: dict, terms: dict, truncs: dict, infos: dict) -> None:
        self.obs = obs[self.learner]
        self.partner_obs = obs.get(self.partner, {})
        self.info = infos[self.learner]
        self.reward += rewards.get(self.learner, 0.0)
        self.terminated = terms.get(self.learner, False)
        self.truncated = truncs.get(self.learner, False)


def _run_round(matches: Sequence[_Match], learner_actions: Sequence[Any] | None, partner: Policy) -> None:
    """Apply the learners' actions (None: no learner action, e.g. after reset), then partner turns.

    Partner calls are batched across matches: one `act_batch` per round of partner moves.
    """
    if learner_actions is not None:
        simultaneous = [m for m in matches if m.env.turn_mode == "simultaneous"]
        partner_actions = dict(zip(map(id, simultaneous), act_batch(partner, [m.partner_obs for m in simultaneous])))
        for m, action in zip(matches, learner_actions):
            m.reward = 0.0
            joint = {m.learner: action}
            if id(m) in partner_actions:
                joint[m.partner] = partner_actions[id(m)]
            m.play(joint)
    while waiting := [m for m in matches if m.needs_partner()]:
        for m, action in zip(waiting, act_batch(partner, [m.partner_obs for m in waiting])):
            m.play({m.partner: action})


def _learner_seat(choice: int | str, rng: np.random.Generator) -> str:
    if choice == "random":
        return f"agent_{int(rng.integers(2))}"
    if choice in (0, 1):
        return f"agent_{choice}"
    raise ValueError(f"learner_seat must be 0, 1 or 'random', not {choice!r}")


class SocialGymEnv(gymnasium.Env):
    """One learner against a partner policy. `env.step("I can do $90 if you deliver it.")`.

    Keyword arguments other than `partner` and `learner_seat` go to `SocialParallelEnv`. The reward of a
    step is the learner's utterance reward; `info["episode"]` holds the episode summary at the end.
    """

    metadata = {"render_modes": ["human", "ansi"], "render_fps": 1}

    def __init__(self, partner: Policy | None = None, learner_seat: int | str = 0, **env_kwargs: Any) -> None:
        self.partner = partner if partner is not None else ScriptedPolicy(DEFAULT_PARTNER_LINES)
        self.learner_seat = learner_seat
        _learner_seat(learner_seat, np.random.default_rng(0))  # validate early
        self.parallel_env = SocialParallelEnv(**env_kwargs)
        self.render_mode = self.parallel_env.render_mode
        self.observation_space = obs_lib.observation_space(self.parallel_env.max_turns, self.parallel_env.max_utterance_chars)
        self.action_space = obs_lib.action_space(self.parallel_env.max_utterance_chars)
        self._match = _Match(self.parallel_env)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        learner = _learner_seat(self.learner_seat, self.np_random)
        self._match.start(learner, seed, options)
        _run_round([self._match], None, self.partner)
        return self._match.obs, self._match.info

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        if not self._match.live:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        _run_round([self._match], [action], self.partner)
        m = self._match
        return m.obs, m.reward, m.terminated, m.truncated, m.info

    def render(self) -> str | None:
        text = self.parallel_env.render()
        if self.render_mode == "human":
            print(text, end="")
            return None
        return text

    @property
    def episode(self):  # noqa: ANN201 - Episode, re-exported for convenience
        return self.parallel_env.episode


class SocialVectorEnv(VectorEnv):
    """`num_envs` learner-vs-partner episodes stepped together (gymnasium vector API, next-step autoreset).

    `step(actions)` takes one action per sub-env (strings, Action objects or dicts) or the batched dict
    that `action_space.sample()` returns. The partner acts for all sub-envs that wait on it in one
    `act_batch` call per round. A sub-env that ended is reset on the following `step`, which ignores
    its action, as gymnasium's NEXT_STEP autoreset mode specifies.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int, partner: Policy | None = None, learner_seat: int | str = 0, **env_kwargs: Any) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be at least 1")
        self.num_envs = num_envs
        self.partner = partner if partner is not None else ScriptedPolicy(DEFAULT_PARTNER_LINES)
        self.learner_seat = learner_seat
        self.envs = [SocialParallelEnv(**env_kwargs) for _ in range(num_envs)]
        first = self.envs[0]
        self.single_observation_space = obs_lib.observation_space(first.max_turns, first.max_utterance_chars)
        self.single_action_space = obs_lib.action_space(first.max_utterance_chars)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._matches = [_Match(env) for env in self.envs]
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._rng = np.random.default_rng()
        self._seeds: list[int | None] = [None] * num_envs

    def reset(self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
            self._rng = np.random.default_rng(seed)
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for {self.num_envs} envs")
            seeds = list(seed)
        for m, s in zip(self._matches, seeds):
            m.start(_learner_seat(self.learner_seat, self._rng), s, options)
        _run_round(self._matches, None, self.partner)
        self._needs_reset[:] = False
        return self._batch_obs(), self._batch_infos()

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        if isinstance(actions, dict):
            actions = list(iterate(self.action_space, actions))
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} envs")
        resetting = [m for m, r in zip(self._matches, self._needs_reset) if r]
        for m in resetting:
            m.start(_learner_seat(self.learner_seat, self._rng), None, None)
        playing = [(m, a) for m, a, r in zip(self._matches, actions, self._needs_reset) if not r]
        _run_round([m for m, _ in playing], [a for _, a in playing], self.partner)
        if resetting:
            _run_round(resetting, None, self.partner)
        for m in resetting:
            m.reward, m.terminated, m.truncated = 0.0, False, False
        rewards = np.array([m.reward for m in self._matches], dtype=np.float64)
        terminated = np.array([m.terminated for m in self._matches], dtype=bool)
        truncated = np.array([m.truncated for m in self._matches], dtype=bool)
        self._needs_reset = terminated | truncated
        return self._batch_obs(), rewards, terminated, truncated, self._batch_infos()

    @property
    def episodes(self):  # noqa: ANN201 - list[Episode]
        return [env.episode for env in self.envs]

    def _batch_obs(self) -> Any:
        out = create_empty_array(self.single_observation_space, self.num_envs)
        return concatenate(self.single_observation_space, [m.obs for m in self._matches], out)

    def _batch_infos(self) -> dict[str, Any]:
        infos: dict[str, Any] = {}
        for i, m in enumerate(self._matches):
            infos = self._add_info(infos, m.info, i)
        return infos
