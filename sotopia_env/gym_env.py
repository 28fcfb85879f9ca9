"""Single-agent views of `SocialParallelEnv`: `SocialGymEnv` (gymnasium.Env) and `SocialVectorEnv`.

One learning agent holds a seat; the partner is a `Policy` inside the env. `step(utterance)` plays the
learner's action, then the partner's turns, until it is the learner's turn again or the episode ends.
The vector env does this for many episodes at once and calls the partner once per round for all of
them (`act_batch`), so an LLM partner generates in batches too.

An episode the partner ends before the learner's first move (learner in seat 1, partner leaves or the
limits run out at once) gives the learner nothing to act on, and gymnasium has no zero-length episode:
`reset`, and the vector env's autoreset, start a fresh one instead, at most `max_restarts` times, then
raise. The skipped episodes are still recorded (`episodes_path`); `info["restarts"]` counts them.
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
from .env import SocialParallelEnv, step_envs
from .policy import Policy, ScriptedPolicy, act_batch
from .start import other_agent

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
        return other_agent(self.learner)

    @property
    def live(self) -> bool:
        return bool(self.env.agents)

    def start(self, learner: str, seed: int | None, options: dict[str, Any] | None) -> None:
        self.learner = learner
        obs, infos = self.env.reset(seed=seed, options=options)
        self.reward = 0.0
        self._take(obs, {}, {}, {}, infos)

    def needs_partner(self) -> bool:
        """The partner must act before the learner can (round-robin, partner's turn)."""
        return self.live and self.learner not in self.env.active_agents

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
        partner_actions = dict(zip(map(id, simultaneous), _partner_acts(partner, simultaneous)))
        joints = []
        for m, action in zip(matches, learner_actions):
            m.reward = 0.0
            joint = {m.learner: action}
            if id(m) in partner_actions:
                joint[m.partner] = partner_actions[id(m)]
            joints.append(joint)
        _play(matches, joints)
    while waiting := [m for m in matches if m.needs_partner()]:
        _play(waiting, [{m.partner: a} for m, a in zip(waiting, _partner_acts(partner, waiting))])


def _play(matches: Sequence[_Match], joints: Sequence[dict[str, Any]]) -> None:
    """Step these matches together: every utterance of the round is scored in one reward call (`step_envs`)."""
    for m, result in zip(matches, step_envs([m.env for m in matches], joints)):
        m._take(*result)


def _partner_acts(partner: Policy, matches: Sequence[_Match]) -> list[Any]:
    """The partner's actions for these matches in one call; each request is keyed by (episode id, turn,
    seat), so a seeded partner samples per episode, not per batch slot."""
    keys = [(m.env.episode.id, m.partner_obs["turn"], m.partner_obs["seat"]) for m in matches]
    return act_batch(partner, [m.partner_obs for m in matches], keys)


def _start_episodes(
    starts: Sequence[tuple[_Match, str, int | None]], options: dict[str, Any] | None, partner: Policy, max_restarts: int
) -> None:
    """Reset each (match, learner seat, seed) and play the partner's opening moves, batched across matches.

    A match the partner ended before its learner could act is started again (the seed is used for the
    first try only: later tries continue its draws); after `max_restarts` restarts this raises."""
    pending = list(starts)
    restarts = dict.fromkeys(map(id, (m for m, _, _ in starts)), 0)
    for attempt in range(max_restarts + 1):
        if attempt and options and options.get("episode_id") is not None:  # a skipped episode keeps its own id
            options = {**options, "episode_id": f"{options['episode_id']}|restart{attempt}"}
        for m, learner, seed in pending:
            m.start(learner, seed if attempt == 0 else None, options)
        _run_round([m for m, _, _ in pending], None, partner)
        for m, _, _ in pending:
            m.info["restarts"] = restarts[id(m)]
        pending = [p for p in pending if not p[0].live]
        if not pending:
            return
        for m, _, _ in pending:
            restarts[id(m)] += 1
    m, learner, _ = pending[0]
    raise RuntimeError(
        f"the partner ({type(partner).__name__}) ended {max_restarts + 1} episodes in a row before the learner in "
        f"{learner} could act (last end: {m.env.episode.end_reason!r}); give the partner a policy that "
        "opens the dialogue, put the learner in seat 0, or raise max_restarts"
    )


def _learner_seat(choice: int | str, rng: np.random.Generator, options: dict[str, Any] | None = None) -> str:
    """The learner's agent for an episode: the reset options' "seat" (an `EpisodeStart`'s), else the env's
    `learner_seat` (0, 1 or "random", drawn from `rng`)."""
    if options and options.get("seat") is not None:
        seat = options["seat"]
        if seat not in (0, 1) or isinstance(seat, bool):
            raise ValueError(
                f"options['seat'] must be 0 or 1 (the learner's seat; the partner holds the other), not {seat!r}"
            )
        return f"agent_{seat}"
    if choice == "random":
        return f"agent_{int(rng.integers(2))}"
    if choice in (0, 1):
        return f"agent_{choice}"
    raise ValueError(f"learner_seat must be 0, 1 or 'random', not {choice!r}")


def _check_learner_can_act(learner_seat: int | str, max_restarts: int, env: SocialParallelEnv) -> None:
    _learner_seat(learner_seat, np.random.default_rng(0))
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be at least 0, not {max_restarts}")
    if learner_seat != 0 and env.turn_mode == "round-robin" and env.max_turns < 2:
        raise ValueError(
            f"with max_turns={env.max_turns} the learner in seat 1 never gets a turn in round-robin; "
            "raise max_turns or use learner_seat=0"
        )


class SocialGymEnv(gymnasium.Env):
    """One learner against a partner policy. `env.step("I can do $90 if you deliver it.")`.

    Keyword arguments other than `partner`, `learner_seat` and `max_restarts` go to `SocialParallelEnv`.
    The reward of a step is the learner's utterance reward; `info["sotopia_episode"]` holds the episode summary
    at the end (`info["episode"]` is Gymnasium's `RecordEpisodeStatistics`'s key, left to it).

    Reset options: those of `SocialParallelEnv.reset` (scenario, characters, episode_id) and "seat", the learner's
    seat for this episode (0 or 1; default: `learner_seat`): `env.reset(seed=start.seed, options=start.options())`
    for an `EpisodeStart`.

    `reset` always returns an episode the learner can act in. When the partner ends an episode before
    the learner's first move (learner in seat 1), that episode is recorded and a fresh one started, up to
    `max_restarts` times (then RuntimeError); `info["restarts"]` says how many were skipped.
    """

    metadata = {"render_modes": ["human", "ansi"], "render_fps": 1}

    def __init__(
        self, partner: Policy | None = None, learner_seat: int | str = 0, max_restarts: int = 10, **env_kwargs: Any
    ) -> None:
        self.partner = partner if partner is not None else ScriptedPolicy(DEFAULT_PARTNER_LINES)
        self.learner_seat = learner_seat
        self.max_restarts = max_restarts
        self.parallel_env = SocialParallelEnv(**env_kwargs)
        _check_learner_can_act(learner_seat, max_restarts, self.parallel_env)
        self.render_mode = self.parallel_env.render_mode
        self.observation_space = obs_lib.observation_space(
            self.parallel_env.max_turns, self.parallel_env.max_utterance_chars
        )
        self.action_space = obs_lib.action_space(self.parallel_env.max_utterance_chars)
        self._match = _Match(self.parallel_env)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        learner = _learner_seat(self.learner_seat, self.np_random, options)
        _start_episodes([(self._match, learner, seed)], options, self.partner, self.max_restarts)
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

    Like `SocialGymEnv.reset`, `reset` and the autoreset never hand back an episode the partner ended
    before the learner's first move: a fresh one is started (at most `max_restarts` times per sub-env,
    then RuntimeError), so every observation after a reset is live; `info["restarts"]` counts the skips.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(
        self,
        num_envs: int,
        partner: Policy | None = None,
        learner_seat: int | str = 0,
        max_restarts: int = 10,
        **env_kwargs: Any,
    ) -> None:
        if num_envs < 1:
            raise ValueError("num_envs must be at least 1")
        self.num_envs = num_envs
        self.partner = partner if partner is not None else ScriptedPolicy(DEFAULT_PARTNER_LINES)
        self.learner_seat = learner_seat
        self.max_restarts = max_restarts
        self.envs = [SocialParallelEnv(**env_kwargs) for _ in range(num_envs)]
        first = self.envs[0]
        _check_learner_can_act(learner_seat, max_restarts, first)
        self.single_observation_space = obs_lib.observation_space(first.max_turns, first.max_utterance_chars)
        self.single_action_space = obs_lib.action_space(first.max_utterance_chars)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._matches = [_Match(env) for env in self.envs]
        self._needs_reset = np.zeros(num_envs, dtype=bool)
        self._rng = np.random.default_rng()
        self._seeds: list[int | None] = [None] * num_envs

    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict]:
        if options and options.get("episode_id") is not None:
            raise ValueError("options['episode_id'] names one episode; a vector env resets num_envs of them")
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
            self._rng = np.random.default_rng(seed)
        else:
            if len(seed) != self.num_envs:
                raise ValueError(f"got {len(seed)} seeds for {self.num_envs} envs")
            seeds = list(seed)
        starts = [(m, _learner_seat(self.learner_seat, self._rng, options), s) for m, s in zip(self._matches, seeds)]
        _start_episodes(starts, options, self.partner, self.max_restarts)
        self._needs_reset[:] = False
        return self._batch_obs(), self._batch_infos()

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        if isinstance(actions, dict):
            actions = list(iterate(self.action_space, actions))
        actions = list(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"got {len(actions)} actions for {self.num_envs} envs")
        resetting = [m for m, r in zip(self._matches, self._needs_reset) if r]
        playing = [(m, a) for m, a, r in zip(self._matches, actions, self._needs_reset) if not r]
        _run_round([m for m, _ in playing], [a for _, a in playing], self.partner)
        if resetting:
            starts = [(m, _learner_seat(self.learner_seat, self._rng), None) for m in resetting]
            _start_episodes(starts, None, self.partner, self.max_restarts)
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
