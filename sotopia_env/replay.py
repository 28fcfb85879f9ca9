"""Rebuild what each speaker saw when it acted, from an episode record.

Reward labelling and the reward model score (dialogue state, utterance) pairs, where the dialogue state
is exactly the observation prompt the speaker acted on. Replaying the recorded actions through a fresh env
reproduces those prompts without storing them in every episode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .actions import Action, ActionType
from .env import RECORDED_SETTINGS, SocialParallelEnv
from .episode import Episode


@dataclass(frozen=True)
class UtteranceState:
    turn_index: int  # position in episode.turns
    agent: str
    prompt: str  # the observation text the agent acted on
    action: Action


def recorded_settings(episode: Episode) -> dict[str, Any]:
    """The env settings the episode was played with (`env.RECORDED_SETTINGS`, kept in its `meta`).

    Records written before a setting was recorded get the loosest value that replays them: as many
    turns as were played, no silence limit, room for the longest utterance."""
    fallback: dict[str, Any] = {
        "turn_mode": "round-robin",
        "max_turns": max((t.index for t in episode.turns), default=0) + 1,
        "max_silent_turns": 10**6,
        "max_utterance_chars": max((len(t.argument) for t in episode.turns), default=1) or 1,
        "strict_turns": False,
    }
    return {name: episode.meta.get(name, fallback[name]) for name in RECORDED_SETTINGS}


def utterance_states(episode: Episode) -> list[UtteranceState]:
    """One entry per perceivable action (speak, non-verbal, action) in the episode, in order."""
    env = SocialParallelEnv(
        scenarios=[episode.scenario], characters=list(episode.characters), **recorded_settings(episode)
    )
    obs, _ = env.reset(options={"scenario": episode.scenario, "characters": episode.characters})
    states: list[UtteranceState] = []
    by_step: dict[int, list[int]] = {}
    for i, turn in enumerate(episode.turns):
        by_step.setdefault(turn.index, []).append(i)
    for step in sorted(by_step):
        if not env.agents:
            break
        actions = {}
        for i in by_step[step]:
            turn = episode.turns[i]
            action = Action(ActionType.parse(turn.action_type), turn.argument)
            if action.is_speech:
                states.append(UtteranceState(i, turn.agent, obs[turn.agent]["prompt"], action))
            actions[turn.agent] = action
        obs, *_ = env.step(actions)
    return states
