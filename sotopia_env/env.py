"""`SocialParallelEnv`: a Sotopia scenario as a PettingZoo parallel environment.

Two seats, `agent_0` and `agent_1`, filled each episode by two characters. Round-robin by default
(`agent_0` opens), or simultaneous. Every perceivable action (speak, non-verbal communication, action)
is scored by `reward_fn` for its speaker; an optional `judge` scores the finished episode, and its
scores land in `info[agent]["sotopia_episode"]` and in the `Episode` record. (`info["episode"]` is left to
Gymnasium's `RecordEpisodeStatistics`, which owns that key.)

Turns follow PettingZoo's parallel contract: every live agent may send an action each step. In
round-robin the waiting agent's action is ignored, as Sotopia does, and `info[agent]["ignored_action"]`
says so; `observation["your_turn"]` and `observation["action_type_mask"]` say who may act. With
`strict_turns=True` an out-of-turn action raises instead, for code that wants to catch its own mistakes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gymnasium import spaces
from pettingzoo import ParallelEnv

from . import observation as obs_lib
from .actions import SOTOPIA_NAMES, SPEECH_TYPES, Action, ActionType, parse_action
from .episode import Episode, Turn, write_episode
from .scenarios import Character, Scenario, library_characters, library_scenarios, scenario_pairings, split

TurnMode = Literal["round-robin", "simultaneous"]

# Looked up on every step: enum members and seat numbers as plain module constants (an attribute of an
# Enum class costs a Python-level lookup each time).
_NONE, _LEAVE = ActionType.none, ActionType.leave
_CODE = {kind: int(kind) for kind in ActionType}
_SEAT = {"agent_0": 0, "agent_1": 1}
_MASK_ANY, _MASK_WAIT, _MASK_ENDED = obs_lib.MASK_ANY, obs_lib.MASK_WAIT, obs_lib.MASK_ENDED
_TURN_LINE = obs_lib.TURN_LINE

# The settings that shape what agents observe and may do; recorded in each episode's `meta` so that a
# replay (`replay.utterance_states`) rebuilds the env the episode was played in.
RECORDED_SETTINGS = ("turn_mode", "max_turns", "max_silent_turns", "max_utterance_chars", "strict_turns")
# The info key of the episode summary at an episode's end. Not "episode": Gymnasium's RecordEpisodeStatistics (the
# wrapper CleanRL puts on every env) owns that key and asserts that the env does not write it.
EPISODE_INFO_KEY = "sotopia_episode"


@dataclass(frozen=True)
class RewardContext:
    """Everything a per-utterance reward function may look at."""

    scenario: Scenario
    characters: tuple[Character, Character]
    agent: str
    seat: int
    turn: int
    prompt: str  # the observation text the speaker acted on (the dialogue state)
    action: Action
    history: tuple[Turn, ...]  # turns before this one


class UtteranceReward(Protocol):
    """Scores one utterance for its speaker. `rewards.RewardModel.as_env_reward()` implements it.

    It may also have `batch(contexts) -> list[float]`, scoring many contexts in one call with the same
    numbers as calling it on each: `score_contexts` and `step_envs` use it, so a vector env scores all its
    sub-envs' utterances of a round (and a trainer all its candidates) in one model call."""

    def __call__(self, context: RewardContext) -> float: ...


def describe_reward(reward_fn: Any) -> str:
    """How errors name a reward function: its `description` (a reward model says which), else its name."""
    return getattr(reward_fn, "description", None) or getattr(reward_fn, "__name__", type(reward_fn).__name__)


class NonFiniteReward(ValueError):
    """A reward function returned a value that is not a finite number (NaN or infinite)."""


def score_contexts(
    reward_fn: UtteranceReward | Callable[[RewardContext], float],
    contexts: Sequence[RewardContext],
    allow_nonfinite: bool = False,
) -> list[float]:
    """The rewards of these contexts: one `reward_fn.batch` call where it has one, else one call each. A value
    that is not a finite number raises `NonFiniteReward` naming the function and the utterance, unless
    `allow_nonfinite` (a trainer that leaves such utterances out itself)."""
    if not contexts:
        return []
    batch = getattr(reward_fn, "batch", None)
    scores = [float(x) for x in batch(list(contexts))] if batch is not None else [float(reward_fn(c)) for c in contexts]
    if len(scores) != len(contexts):
        raise ValueError(
            f"{type(reward_fn).__name__}.batch returned {len(scores)} rewards for {len(contexts)} contexts"
        )
    if not allow_nonfinite:
        for context, score in zip(contexts, scores):
            if not math.isfinite(score):
                raise NonFiniteReward(
                    f"the reward function {describe_reward(reward_fn)} gave {score} for {context.agent}'s "
                    f"{context.action.action_type.name} at turn {context.turn} of scenario {context.scenario.id!r} "
                    f"({context.action.argument[:60]!r}): a reward must be a finite number; check the reward model"
                )
    return scores


class EpisodeJudge(Protocol):
    """Scores a finished episode: agent -> dimension -> score. `rewards.Judge` implements it."""

    def __call__(self, episode: Episode) -> Mapping[str, Mapping[str, float]]: ...


@dataclass(slots=True)
class _StepPlan:
    parsed: dict[str, tuple[Action, list[str]]]  # agent -> (action, repairs), for the agents whose turn it is
    ignored: set[str]  # agents that acted out of turn
    contexts: list[RewardContext]  # the speech actions to score, in `parsed` order


def step_envs(
    envs: Sequence[SocialParallelEnv], actions: Sequence[Mapping[str, Any]]
) -> list[tuple[dict, dict, dict, dict, dict]]:
    """`env.step(actions)` for many envs, with every utterance of the round scored in one call per reward
    function (its `batch` form where it has one). Returns each env's step result, in order; the rewards
    are the numbers the envs' own `step` would give."""
    if len(envs) != len(actions):
        raise ValueError(f"{len(actions)} action dicts for {len(envs)} envs")
    plans = [env._plan(a) for env, a in zip(envs, actions)]
    flat = _score_by_function([(env, c) for env, plan in zip(envs, plans) for c in plan.contexts])
    scores = []
    for plan in plans:
        scores.append(flat[: len(plan.contexts)])
        flat = flat[len(plan.contexts) :]
    return [env._apply(plan, s) for env, plan, s in zip(envs, plans, scores)]


def _score_by_function(
    scored: Sequence[tuple[SocialParallelEnv, RewardContext]], allow_nonfinite: bool = False
) -> list[float]:
    """The reward of each (env, context) by that env's reward function: one `score_contexts` call per distinct
    function, whatever the number of envs sharing it."""
    out = [0.0] * len(scored)
    by_fn: dict[int, list[int]] = {}
    for i, (env, _) in enumerate(scored):
        by_fn.setdefault(id(env.reward_fn), []).append(i)
    for members in by_fn.values():
        values = score_contexts(scored[members[0]][0].reward_fn, [scored[i][1] for i in members], allow_nonfinite)
        for i, value in zip(members, values):
            out[i] = value
    return out


def would_earn_many(
    candidates: Sequence[tuple[SocialParallelEnv, str, Any]], allow_nonfinite: bool = False
) -> list[float]:
    """`env.would_earn(agent, [action])` for (env, agent, action) candidates across many envs, scored in one
    call per reward function (its `batch` form where it has one); non-speech actions earn 0, as in `step`. A
    non-finite reward raises (`score_contexts`) unless `allow_nonfinite`."""
    contexts = []
    for env, agent, action in candidates:
        if env.reward_fn is None:
            raise ValueError("this env has no reward_fn to score candidates with")
        contexts.append(env.reward_context(agent, action))
    speech = [i for i, context in enumerate(contexts) if context.action.is_speech]
    out = [0.0] * len(candidates)
    scored = _score_by_function([(candidates[i][0], contexts[i]) for i in speech], allow_nonfinite)
    for i, value in zip(speech, scored):
        out[i] = value
    return out


class SocialParallelEnv(ParallelEnv):
    metadata = {"name": "sotopia_social_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True}

    def __init__(
        self,
        scenarios: Sequence[Scenario] | Mapping[str, Scenario] | str | None = None,
        characters: Sequence[Character] | Mapping[str, Character] | None = None,
        *,
        pairings: Mapping[str, Sequence[tuple[str, str]]] | None = None,
        turn_mode: TurnMode = "round-robin",
        max_turns: int = 20,
        max_silent_turns: int = 4,
        max_utterance_chars: int = 2000,
        reward_fn: UtteranceReward | Callable[[RewardContext], float] | None = None,
        judge: EpisodeJudge | Callable[[Episode], Mapping[str, Mapping[str, float]]] | None = None,
        strict_turns: bool = False,
        episodes_path: str | Path | None = None,
        agent_models: Mapping[str, str] | None = None,
        render_mode: str | None = None,
    ) -> None:
        """
        scenarios: the pool `reset` draws from: Scenario objects, a split name ("all", "hard", a
            category) of the shipped library, or None for the whole library.
        characters: the pool of characters (default: the shipped library).
        pairings: the character pairings listed per scenario id, which `reset` draws from when no characters are
            given (`scenario_pairings`; default: the shipped library's). A library folder's come from
            `agents.runner.load_pool`.
        max_silent_turns: the episode ends after this many consecutive steps in which nobody spoke.
        strict_turns: in round-robin mode, an action other than `none` from the agent whose turn it is
            not is ignored and reported in its info as `ignored_action` (Sotopia's masking, and what
            PettingZoo callers that send every live agent's action need); True raises ValueError instead.
        episodes_path: when set, each finished episode is appended to this JSONL file.
        """
        if turn_mode not in ("round-robin", "simultaneous"):
            raise ValueError(f"turn_mode must be 'round-robin' or 'simultaneous', not {turn_mode!r}")
        if max_turns < 1 or max_silent_turns < 1 or max_utterance_chars < 1:
            raise ValueError("max_turns, max_silent_turns and max_utterance_chars must be at least 1")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None")
        if isinstance(scenarios, str):
            scenarios = split(scenarios)
        pool = library_scenarios() if scenarios is None else scenarios
        self.scenarios: dict[str, Scenario] = dict(pool) if isinstance(pool, Mapping) else {s.id: s for s in pool}
        if not self.scenarios:
            raise ValueError("no scenarios to draw from")
        chars = library_characters() if characters is None else characters
        self.characters: dict[str, Character] = dict(chars) if isinstance(chars, Mapping) else {c.id: c for c in chars}
        self.pairings = pairings
        self.turn_mode = turn_mode
        self.max_turns = max_turns
        self.max_silent_turns = max_silent_turns
        self.max_utterance_chars = max_utterance_chars
        self.reward_fn = reward_fn
        self.judge = judge
        self.strict_turns = strict_turns
        self.episodes_path = episodes_path
        self.agent_models = dict(agent_models or {})
        self.render_mode = render_mode
        self.possible_agents = ["agent_0", "agent_1"]
        self.agents: list[str] = []
        self._observation_spaces = {
            a: obs_lib.observation_space(max_turns, max_utterance_chars) for a in self.possible_agents
        }
        self._action_spaces = {a: obs_lib.action_space(max_utterance_chars) for a in self.possible_agents}
        self._rng = random.Random()
        self._episode: Episode | None = None
        self._rendered: dict[tuple[int, int, int, int], tuple[Scenario, Character, Character, Any]] = {}
        self._rendered_upto = 0

    # --- spaces (the same object every call, as PettingZoo requires) ---------------------------

    def observation_space(self, agent: str) -> spaces.Space:
        self._check_agent_name(agent)
        return self._observation_spaces[agent]

    def action_space(self, agent: str) -> spaces.Space:
        self._check_agent_name(agent)
        return self._action_spaces[agent]

    # --- episode state --------------------------------------------------------------------------

    @property
    def episode(self) -> Episode:
        """The record of the current (or just finished) episode."""
        if self._episode is None:
            raise RuntimeError("no episode yet; call reset() first")
        return self._episode

    @property
    def scenario(self) -> Scenario:
        return self.episode.scenario

    @property
    def pair(self) -> tuple[Character, Character]:
        return self.episode.characters

    @property
    def active_agents(self) -> list[str]:
        """Agents expected to act this step."""
        return list(self._active) if self.agents else []

    def _update_active(self) -> None:
        if self.turn_mode == "simultaneous":
            self._active = list(self.possible_agents)
        else:
            self._active = [self.possible_agents[self._turn % 2]]

    def reset(
        self, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Start an episode. options: {"scenario": Scenario | id, "characters": (a, b) as Characters or ids,
        "episode_id": the record's id (default: a fresh uuid)}; an `EpisodeStart`'s `options()` fit (its "seat" is
        for the single-agent envs and ignored here)."""
        if seed is not None:  # seeds the draw of scenario and characters; seed spaces with space.seed()
            self._rng.seed(seed)
        options = options or {}
        scenario = self._pick_scenario(options.get("scenario"))
        pair = self._pick_characters(scenario, options.get("characters"))
        self._episode = Episode(
            scenario=scenario,
            characters=pair,
            agents=tuple(self.possible_agents),  # type: ignore[arg-type]
            agent_models=self.agent_models,
            seed=seed,
            meta={name: getattr(self, name) for name in RECORDED_SETTINGS},
        )
        if options.get("episode_id") is not None:
            self._episode.id = str(options["episode_id"])
        self._pair = pair
        # Per-episode constants the step reads by seat: display names, character ids, prompt headers and the
        # two forms of the closing line with the turn number left out.
        self._names = (pair[0].name, pair[1].name)
        self._ids = (pair[0].id, pair[1].id)
        self._headers, self._tails = self._rendered_constants(scenario, pair)
        self.agents = list(self.possible_agents)
        self._turn = 0
        self._update_active()
        self._silent = 0
        # The dialogue as the agents perceive it, kept in the forms observations need (the prompt's text grows
        # by a line per action), so a step costs about the same at turn 19 as at turn 1.
        self._history: list[tuple[int, Action]] = []
        self._history_obs: list[dict[str, Any]] = []
        self._dialogue = obs_lib.NO_DIALOGUE
        self._rendered_upto = 0
        observations, infos = self._outputs(self.agents, {}, ())
        bound = obs_lib.PROMPT_OVERHEAD_CHARS
        if any(len(obs["prompt"]) > bound for obs in observations.values()):
            raise ValueError(
                f"scenario {scenario.id!r} with these characters renders a prompt over {bound} characters "
                "before any dialogue; shorten its texts"
            )
        return observations, infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        plan = self._plan(actions)
        scores = score_contexts(self.reward_fn, plan.contexts) if self.reward_fn is not None else []
        return self._apply(plan, scores)

    def reward_context(self, agent: str, action: Any) -> RewardContext:
        """The context the env's `reward_fn` would score `action` by `agent` with, if it were played now.
        `agent` must be one whose turn it is; the action is parsed as `step` parses it."""
        if self._episode is None or agent not in self._active:
            raise ValueError(f"it is not {agent!r}'s turn (active: {self._active if self._episode else 'no episode'})")
        parsed, _ = parse_action(agent, action, self.max_utterance_chars)
        return self._context(agent, parsed, self._prompt(agent), tuple(self._episode.turns))

    def would_earn(self, agent: str, actions: Sequence[Any]) -> list[float]:
        """What each of these candidate actions by `agent` would be rewarded now, without playing any: the
        same function and the same contexts as `step`, so a trainer's candidate rewards and the env's
        reward of the one played are one number. Non-speech actions earn 0, as in `step`."""
        return would_earn_many([(self, agent, a) for a in actions])

    def _context(self, agent: str, action: Action, prompt: str, history: tuple[Turn, ...]) -> RewardContext:
        return RewardContext(
            scenario=self._episode.scenario,
            characters=self._pair,
            agent=agent,
            seat=self.possible_agents.index(agent),
            turn=self._turn,
            prompt=prompt,
            action=action,
            history=history,
        )

    def _plan(self, actions: Mapping[str, Any]) -> _StepPlan:
        """Validate and parse a step's actions (nothing changes yet) and build the contexts to score."""
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        # `type(...) is dict` first: the Mapping ABC check alone cost more than parsing a plain utterance.
        if type(actions) is not dict and not isinstance(actions, Mapping):
            raise TypeError(f"step() takes a dict of agent -> action, not {type(actions).__name__}")

        # Validate everything before touching state, so bad input loses nothing.
        agents = self.agents
        for name in actions:  # a loop, not a comprehension: this runs every step
            if name not in agents:
                unknown = [a for a in actions if a not in agents]
                raise ValueError(f"unknown agent(s) {unknown}; the agents in this episode are {agents}")
        active = self._active
        parsed: dict[str, tuple[Action, list[str]]] = {}
        ignored: set[str] = set()
        for agent, raw in actions.items():
            action, repairs = parse_action(agent, raw, self.max_utterance_chars)
            if agent not in active:
                if action.action_type is not _NONE:
                    if self.strict_turns:
                        raise ValueError(
                            f"agent '{agent}' acted out of turn; it is '{active[0]}'s turn (send only the active "
                            "agent's action or a 'none' action, or build the env with strict_turns=False)"
                        )
                    ignored.add(agent)
                continue
            parsed[agent] = (action, repairs)
        if len(parsed) < len(active):
            missing = [a for a in active if a not in parsed]
            raise ValueError(f"no action for {missing}; expected actions from {active} this step")

        contexts = []
        if self.reward_fn is not None:
            history = tuple(self._episode.turns)
            contexts = [
                self._context(agent, action, self._prompt(agent), history)
                for agent, (action, _) in parsed.items()
                if action.is_speech
            ]
        return _StepPlan(parsed, ignored, contexts)

    def _apply(self, plan: _StepPlan, scores: Sequence[float]) -> tuple[dict, dict, dict, dict, dict]:
        """Play a planned step; `scores` are the rewards of `plan.contexts`, in order."""
        parsed, ignored = plan.parsed, plan.ignored
        if len(scores) != len(plan.contexts):
            raise ValueError(f"{len(scores)} rewards for {len(plan.contexts)} scored actions")
        score_of = dict(zip([c.agent for c in plan.contexts], scores)) if scores else None
        live = self.agents
        rewards = dict.fromkeys(live, 0.0)
        turns, history, names, turn = self._episode.turns, self._history, self._names, self._turn
        spoke = False
        left = False
        for agent, (action, repairs) in parsed.items():
            seat = _SEAT[agent]
            kind = action.action_type
            reward = score_of.get(agent, 0.0) if score_of else 0.0
            rewards[agent] = reward
            turns.append(Turn(turn, agent, names[seat], SOTOPIA_NAMES[kind], action.argument, reward, repairs))
            if kind is not _NONE:
                spoke = spoke or kind in SPEECH_TYPES
                left = left or kind is _LEAVE
                line = obs_lib.history_line(len(history), names[seat], action)
                self._dialogue = f"{self._dialogue}\n{line}" if history else line
                history.append((seat, action))
                self._history_obs.append({"speaker": seat, "action_type": _CODE[kind], "argument": action.argument})

        self._turn = turn = turn + 1
        self._update_active()
        self._silent = 0 if spoke else self._silent + 1
        end_reason = ""
        if left:
            end_reason = "leave"
        elif self._silent >= self.max_silent_turns:
            end_reason = "silence"
        elif turn >= self.max_turns:
            end_reason = "turn_limit"
        terminations = dict.fromkeys(live, end_reason in ("leave", "silence"))
        truncations = dict.fromkeys(live, end_reason == "turn_limit")
        if end_reason:
            self._finish(end_reason)
            # Cleared before the last observations are made, so they give nobody a turn.
            self.agents = []
            self._active = []
        observations, infos = self._outputs(live, parsed, ignored)
        if self.render_mode == "human":
            print(self.render(), end="")
        return observations, rewards, terminations, truncations, infos

    def _finish(self, end_reason: str) -> None:
        episode = self._episode
        episode.end_reason = end_reason
        if self.judge is not None:
            try:
                scores = self.judge(episode)
                episode.judge_scores = {a: {k: float(v) for k, v in d.items()} for a, d in scores.items()}
                episode.judge_model = getattr(self.judge, "model_name", type(self.judge).__name__)
            except Exception as exc:  # a failed judge must not lose the episode
                episode.judge_failures.append(f"{type(exc).__name__}: {exc}")
        if self.episodes_path is not None:
            write_episode(self.episodes_path, episode)

    def render(self) -> str:
        """The dialogue lines added since the last call (mode 'human' prints them, 'ansi' returns them)."""
        if self._episode is None:
            return ""
        lines = [f"{action.render(self._pair[seat].name)}\n" for seat, action in self._history[self._rendered_upto :]]
        self._rendered_upto = len(self._history)
        if not self.agents and self._episode.end_reason:
            lines.append(f"[episode ended: {self._episode.end_reason}]\n")
        return "".join(lines)

    def close(self) -> None:
        pass

    # --- helpers ----------------------------------------------------------------------------------

    def _check_agent_name(self, agent: str) -> None:
        if agent not in self.possible_agents:
            raise ValueError(f"unknown agent {agent!r}; possible agents are {self.possible_agents}")

    def _pick_scenario(self, choice: Scenario | str | None) -> Scenario:
        if isinstance(choice, Scenario):
            return choice
        if isinstance(choice, str):
            if choice not in self.scenarios:
                raise ValueError(f"unknown scenario {choice!r}; {len(self.scenarios)} scenarios are loaded")
            return self.scenarios[choice]
        if choice is not None:
            raise TypeError(f"options['scenario'] must be a Scenario or a scenario id, not {type(choice).__name__}")
        return self.scenarios[self._rng.choice(sorted(self.scenarios))]

    def _pick_characters(
        self, scenario: Scenario, choice: Sequence[Character | str] | None
    ) -> tuple[Character, Character]:
        if choice is not None:
            if len(choice) != 2:
                raise ValueError(f"options['characters'] must name exactly two characters, got {len(choice)}")
            out = []
            for c in choice:
                if isinstance(c, Character):
                    out.append(c)
                elif isinstance(c, str) and c in self.characters:
                    out.append(self.characters[c])
                else:
                    raise ValueError(f"unknown character {c!r}; {len(self.characters)} characters are loaded")
            if out[0].id == out[1].id:
                raise ValueError(f"a character cannot talk to itself ({out[0].id!r} in both seats)")
            return out[0], out[1]
        a, b = self._rng.choice(
            scenario_pairings(scenario.id, self.characters, rng=self._rng, listed=self.pairings, unlisted=1)
        )
        return self.characters[a], self.characters[b]

    def _rendered_constants(
        self, scenario: Scenario, pair: tuple[Character, Character]
    ) -> tuple[tuple[str, str], tuple[tuple[str, str], tuple[str, str]]]:
        """Both seats' prompt headers and closing-line tails for this scenario and pair, rendered once per env
        for each (scenario, pair) it plays: the records are frozen, so the same objects render the same text."""
        key = (id(scenario), id(pair[0]), id(pair[1]), self.max_turns)
        hit = self._rendered.get(key)
        if hit is not None and hit[0] is scenario and hit[1] is pair[0] and hit[2] is pair[1]:
            return hit[3]
        if len(self._rendered) >= 4096:  # bounded: a run over many characters draws ever new pairs
            self._rendered.clear()
        texts = (
            (obs_lib.prompt_header(scenario, pair, 0), obs_lib.prompt_header(scenario, pair, 1)),
            (obs_lib.footer_tails(pair, 0, self.max_turns), obs_lib.footer_tails(pair, 1, self.max_turns)),
        )
        # The records are kept with their texts, so the ids in the key stay theirs while the entry lives.
        self._rendered[key] = (scenario, pair[0], pair[1], texts)
        return texts

    def _prompt(self, agent: str, your_turn: bool | None = None) -> str:
        seat = _SEAT[agent]
        if your_turn is None:
            your_turn = agent in self._active
        if not self.agents:
            footer = obs_lib.prompt_footer(self._pair, seat, self._turn, self.max_turns, your_turn, ended=True)
            return f"{self._headers[seat]}{self._dialogue}{footer}"
        # `obs_lib.prompt_footer` with the episode's constant parts rendered at reset.
        return f"{self._headers[seat]}{self._dialogue}{_TURN_LINE}{self._turn}{self._tails[seat][not your_turn]}"

    def _outputs(
        self, agents: Sequence[str], parsed: Mapping[str, tuple[Action, list[str]]], ignored: Collection[str]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """Each agent's observation and info after a reset or a step: one loop, the parts all agents share
        read once (this and `history` copying are most of a step)."""
        active, live, turn, dialogue, history = self._active, self.agents, self._turn, self._dialogue, self._history_obs
        episode = self._episode
        scenario_id = episode.scenario.id
        observations, infos = {}, {}
        for agent in agents:
            seat = _SEAT[agent]
            your_turn = agent in active
            if live:
                prompt = f"{self._headers[seat]}{dialogue}{_TURN_LINE}{turn}{self._tails[seat][not your_turn]}"
                mask = _MASK_ANY if your_turn else _MASK_WAIT
            else:
                prompt = self._prompt(agent, your_turn)
                mask = _MASK_ENDED
            observations[agent] = {
                "prompt": prompt,
                "name": self._names[seat],
                "turn": turn,
                "seat": seat,
                "your_turn": 1 if your_turn else 0,
                "action_type_mask": mask.copy(),  # a copy: callers may keep or edit it
                "history": tuple(map(dict.copy, history)),  # fresh dicts: callers may keep or edit them
            }
            repairs = parsed[agent][1] if agent in parsed else None
            info: dict[str, Any] = {
                "character": self._ids[seat],
                "scenario": scenario_id,
                "active_agents": list(active) if live else [],
                "repairs": list(repairs) if repairs else [],
                "ignored_action": agent in ignored,  # an out-of-turn action this step that had no effect
            }
            if not live:
                info[EPISODE_INFO_KEY] = self._episode_info(agent)
            infos[agent] = info
        return observations, infos

    def _episode_info(self, agent: str) -> dict[str, Any]:
        """`info[agent]["sotopia_episode"]` once the episode has ended."""
        episode = self._episode
        return {
            "id": episode.id,
            "end_reason": episode.end_reason,
            "turns": self._turn,
            "return": episode.total_reward(agent),
            "judge_scores": episode.judge_scores.get(agent, {}),
            "judge_failures": list(episode.judge_failures),
        }
