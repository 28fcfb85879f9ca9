"""`SocialParallelEnv`: a Sotopia scenario as a PettingZoo parallel environment.

Two seats, `agent_0` and `agent_1`, filled each episode by two characters. Round-robin by default
(`agent_0` opens), or simultaneous. Every perceivable action (speak, non-verbal communication, action)
is scored by `reward_fn` for its speaker; an optional `judge` scores the finished episode, and its
scores land in `info[agent]["episode"]` and in the `Episode` record.

Turns follow PettingZoo's parallel contract: every live agent may send an action each step. In
round-robin the waiting agent's action is ignored, as Sotopia does, and `info[agent]["ignored_action"]`
says so; `observation["your_turn"]` and `observation["action_type_mask"]` say who may act. With
`strict_turns=True` an out-of-turn action raises instead, for code that wants to catch its own mistakes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from gymnasium import spaces
from pettingzoo import ParallelEnv

from . import observation as obs_lib
from .actions import SOTOPIA_NAMES, Action, ActionType, parse_action
from .episode import Episode, Turn, write_episode
from .scenarios import Character, Scenario, library_characters, library_pairings, library_scenarios, split

TurnMode = Literal["round-robin", "simultaneous"]

# The settings that shape what agents observe and may do; recorded in each episode's `meta` so that a
# replay (`replay.utterance_states`) rebuilds the env the episode was played in.
RECORDED_SETTINGS = ("turn_mode", "max_turns", "max_silent_turns", "max_utterance_chars", "strict_turns")


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
    """Scores one utterance for its speaker. `rewards.RewardModel.as_env_reward()` implements it."""

    def __call__(self, context: RewardContext) -> float: ...


class EpisodeJudge(Protocol):
    """Scores a finished episode: agent -> dimension -> score. `rewards.Judge` implements it."""

    def __call__(self, episode: Episode) -> Mapping[str, Mapping[str, float]]: ...


class SocialParallelEnv(ParallelEnv):
    metadata = {"name": "sotopia_social_v0", "render_modes": ["human", "ansi"], "is_parallelizable": True}

    def __init__(
        self,
        scenarios: Sequence[Scenario] | Mapping[str, Scenario] | str | None = None,
        characters: Sequence[Character] | Mapping[str, Character] | None = None,
        *,
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
        """Start an episode. options: {"scenario": Scenario | id, "characters": (a, b) as Characters or ids}."""
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
        self._pair = pair
        self.agents = list(self.possible_agents)
        self._turn = 0
        self._update_active()
        self._silent = 0
        # The dialogue as the agents perceive it, kept in the three forms observations need, appended
        # per action so a step costs the same at turn 19 as at turn 1.
        self._history: list[tuple[int, Action]] = []
        self._history_lines: list[str] = []
        self._history_obs: list[dict[str, Any]] = []
        self._dialogue = obs_lib.NO_DIALOGUE
        self._headers = {a: obs_lib.prompt_header(scenario, pair, i) for i, a in enumerate(self.possible_agents)}
        self._rendered_upto = 0
        for agent in self.agents:
            bound = obs_lib.PROMPT_OVERHEAD_CHARS
            if len(self._prompt(agent)) > bound:
                raise ValueError(
                    f"scenario {scenario.id!r} with these characters renders a prompt over {bound} characters "
                    "before any dialogue; shorten its texts"
                )
        observations = {a: self._observe(a) for a in self.agents}
        infos = {a: self._info(a) for a in self.agents}
        return observations, infos

    def step(self, actions: Mapping[str, Any]) -> tuple[dict, dict, dict, dict, dict]:
        if self._episode is None:
            raise RuntimeError("call reset() before step()")
        if not self.agents:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        if not isinstance(actions, Mapping):
            raise TypeError(f"step() takes a dict of agent -> action, not {type(actions).__name__}")

        # Validate everything before touching state, so bad input loses nothing.
        unknown = [a for a in actions if a not in self.agents]
        if unknown:
            raise ValueError(f"unknown agent(s) {unknown}; the agents in this episode are {self.agents}")
        active = self._active
        parsed: dict[str, tuple[Action, list[str]]] = {}
        ignored: set[str] = set()
        for agent, raw in actions.items():
            action, repairs = parse_action(agent, raw, self.max_utterance_chars)
            if agent not in active:
                if action.action_type is not ActionType.none:
                    if self.strict_turns:
                        raise ValueError(
                            f"agent '{agent}' acted out of turn; it is '{active[0]}'s turn (send only the active "
                            "agent's action or a 'none' action, or build the env with strict_turns=False)"
                        )
                    ignored.add(agent)
                continue
            parsed[agent] = (action, repairs)
        missing = [a for a in active if a not in parsed]
        if missing:
            raise ValueError(f"no action for {missing}; expected actions from {active} this step")

        rewards = dict.fromkeys(self.agents, 0.0)
        prompts = {agent: self._prompt(agent) for agent in parsed} if self.reward_fn else {}
        history_before = tuple(self._episode.turns) if self.reward_fn is not None else ()
        spoke = False
        left = False
        for agent, (action, repairs) in parsed.items():
            seat = self.possible_agents.index(agent)
            reward = 0.0
            if action.is_speech:
                spoke = True
                if self.reward_fn is not None:
                    context = RewardContext(
                        scenario=self._episode.scenario,
                        characters=self._pair,
                        agent=agent,
                        seat=seat,
                        turn=self._turn,
                        prompt=prompts[agent],
                        action=action,
                        history=history_before,
                    )
                    reward = float(self.reward_fn(context))
            left = left or action.action_type is ActionType.leave
            rewards[agent] = reward
            self._episode.turns.append(
                Turn(
                    index=self._turn,
                    agent=agent,
                    character=self._pair[seat].name,
                    action_type=SOTOPIA_NAMES[action.action_type],
                    argument=action.argument,
                    reward=reward,
                    repairs=repairs,
                )
            )
            if action.action_type is not ActionType.none:
                self._history.append((seat, action))
                self._history_lines.append(
                    obs_lib.history_line(len(self._history_lines), self._pair[seat].name, action)
                )
                self._history_obs.append(
                    {"speaker": seat, "action_type": int(action.action_type), "argument": action.argument}
                )

        if self._history_lines:
            self._dialogue = "\n".join(self._history_lines)
        self._turn += 1
        self._update_active()
        self._silent = 0 if spoke else self._silent + 1
        end_reason = ""
        if left:
            end_reason = "leave"
        elif self._silent >= self.max_silent_turns:
            end_reason = "silence"
        elif self._turn >= self.max_turns:
            end_reason = "turn_limit"
        done_terminal = end_reason in ("leave", "silence")
        live = self.agents
        terminations = {a: done_terminal for a in live}
        truncations = {a: end_reason == "turn_limit" for a in live}
        if end_reason:
            self._finish(end_reason)
            # Cleared before the last observations are made, so they give nobody a turn.
            self.agents = []
            self._active = []
        observations = {a: self._observe(a) for a in live}
        infos = {a: self._info(a, parsed[a][1] if a in parsed else [], a in ignored) for a in live}
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
        pairs = [
            p for p in library_pairings().get(scenario.id, ()) if p[0] in self.characters and p[1] in self.characters
        ]
        if pairs:
            a, b = self._rng.choice(pairs)
        else:
            if len(self.characters) < 2:
                raise ValueError("need at least two characters")
            a, b = self._rng.sample(sorted(self.characters), 2)
        return self.characters[a], self.characters[b]

    def _prompt(self, agent: str) -> str:
        seat = 0 if agent == "agent_0" else 1
        footer = obs_lib.prompt_footer(
            self._pair, seat, self._turn, self.max_turns, agent in self._active, ended=not self.agents
        )
        return self._headers[agent] + self._dialogue + footer

    def _observe(self, agent: str) -> dict[str, Any]:
        your_turn = agent in self._active
        mask = obs_lib.MASK_ANY if your_turn else obs_lib.MASK_WAIT if self.agents else obs_lib.MASK_ENDED
        seat = 0 if agent == "agent_0" else 1
        return {
            "prompt": self._prompt(agent),
            "name": self._pair[seat].name,
            "turn": self._turn,
            "seat": seat,
            "your_turn": int(your_turn),
            "action_type_mask": mask.copy(),  # a copy: callers may keep or edit it
            "history": tuple(map(dict.copy, self._history_obs)),  # fresh dicts: callers may keep or edit them
        }

    def _info(self, agent: str, repairs: list[str] | None = None, ignored_action: bool = False) -> dict[str, Any]:
        seat = self.possible_agents.index(agent)
        info: dict[str, Any] = {
            "character": self._pair[seat].id,
            "scenario": self._episode.scenario.id,
            "active_agents": self.active_agents,
            "repairs": list(repairs or []),
            "ignored_action": ignored_action,  # an out-of-turn action this step that had no effect
        }
        episode = self._episode
        if episode.end_reason:
            info["episode"] = {
                "id": episode.id,
                "end_reason": episode.end_reason,
                "turns": self._turn,
                "return": episode.total_reward(agent),
                "judge_scores": episode.judge_scores.get(agent, {}),
                "judge_failures": list(episode.judge_failures),
            }
        return info
