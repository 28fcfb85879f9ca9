"""Episode records: the one JSONL format that collection, judging, labelling, training and benchmarks share.

Each line of an episodes file is one finished `Episode`, appended whole by `jsonio.append_jsonl`, so a
crash leaves at most one partial trailing line; readers skip it and the next append cuts it off first.
Reruns resume by skipping the ids already present.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .actions import SPEECH_NAMES
from .jsonio import (  # noqa: F401 - the I/O helpers' old home: `from sotopia_env.episode import ...` keeps working
    append_jsonl,
    iter_jsonl,
    jsonl_line,
    write_jsonl_atomic,
    write_text_atomic,
)
from .scenarios import Character, Scenario

FORMAT_VERSION = 1


@cache
def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sotopia-env")
    except PackageNotFoundError:
        return "0+unknown"


@dataclass(slots=True)
class Turn:
    """One agent's action in one env step, with the reward the env gave it.

    A plain dataclass with slots (pydantic validates it inside `Episode`): the env makes one per action, and
    building a pydantic model there cost more than the rest of the step.
    """

    index: int  # env step this happened in (0-based)
    agent: str  # agent name in the env, e.g. "agent_0"
    character: str  # the character's display name
    action_type: str  # Sotopia name: speak, non-verbal communication, action, leave, none
    argument: str = ""
    reward: float = 0.0
    repairs: list[str] = field(default_factory=list)  # what the env or the agent repaired in this action

    @property
    def is_speech(self) -> bool:
        """True for an action the partner perceives (speak, non-verbal communication, action)."""
        return self.action_type in SPEECH_NAMES


class Episode(BaseModel):
    """A finished (or aborted) dialogue between two characters in one scenario."""

    format_version: int = FORMAT_VERSION
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    scenario: Scenario
    characters: tuple[Character, Character]
    agents: tuple[str, str]  # env agent names, in seat order
    agent_models: dict[str, str] = Field(default_factory=dict)  # agent -> model spec
    turns: list[Turn] = Field(default_factory=list)
    end_reason: str = ""  # leave, silence, turn_limit, error
    judge_scores: dict[str, dict[str, float]] = Field(default_factory=dict)  # agent -> dimension -> score
    judge_reasoning: dict[str, dict[str, str]] = Field(default_factory=dict)
    judge_model: str = ""
    judge_failures: list[str] = Field(default_factory=list)
    seed: int | None = None
    package_version: str = Field(default_factory=package_version)
    created_at: float = Field(default_factory=time.time)
    meta: dict[str, Any] = Field(default_factory=dict)

    def speech_turns(self, agent: str | None = None) -> list[Turn]:
        return [t for t in self.turns if t.is_speech and (agent is None or t.agent == agent)]

    def total_reward(self, agent: str) -> float:
        return sum(t.reward for t in self.turns if t.agent == agent)


# --- JSONL storage (the I/O itself lives in jsonio) ------------------------------------------------


def write_episode(path: str | Path, episode: Episode) -> None:
    append_jsonl(path, episode)


def read_episodes(path: str | Path) -> list[Episode]:
    out = []
    for i, record in enumerate(iter_jsonl(path), 1):
        try:
            out.append(Episode.model_validate(record))
        except Exception as exc:
            raise ValueError(f"{path}: record {i} is not an episode: {exc}") from exc
    return out


def check_unique_ids(episodes: Iterable[Episode], source: str | Path) -> None:
    """Raise a ValueError when two episodes share an id. Judge scores, attributions and labels are matched to
    episodes by id, so a repeated id would give one dialogue's scores to another."""
    seen: dict[str, int] = {}
    for n, episode in enumerate(episodes, 1):
        if episode.id in seen:
            raise ValueError(
                f"{source}: episodes {seen[episode.id]} and {n} share the id {episode.id!r}; scores and labels are "
                "matched to episodes by id, so one would get the other's. Give one of them a new id (ids of runs "
                "that record a run id name their run; files merged from older runs can repeat ids), or judge and "
                "label the files one at a time"
            )
        seen[episode.id] = n


def episode_ids(path: str | Path) -> set[str]:
    """Ids already written to `path` (for resuming)."""
    return {r["id"] for r in iter_jsonl(path) if "id" in r}


# --- exports ----------------------------------------------------------------------------------


def to_sotopia_episode_log(episode: Episode, tag: str = "sotopia-env") -> dict[str, Any]:
    """Sotopia's `EpisodeLog` as JSON (field names and shapes of sotopia.database.EpisodeLog).

    messages: one list per env step of (sender, receiver, message) triples, the first step holding
    each agent's background as sent by the Environment; rewards: per agent (overall, {dimension: score})
    when the episode was judged, else 0.0.
    """
    names = [c.name for c in episode.characters]
    by_agent = dict(zip(episode.agents, names))
    first_turn = [
        ("Environment", names[i], f"Scenario: {episode.scenario.situation}\nGoal: {role.goal}")
        for i, role in enumerate(episode.scenario.roles)
    ]
    steps: dict[int, list[tuple[str, str, str]]] = {}
    for turn in episode.turns:
        sender = by_agent[turn.agent]
        if turn.action_type == "speak":
            text = f'said: "{turn.argument}"'
        elif turn.action_type == "none":
            text = "did nothing"
        elif turn.action_type == "leave":
            text = "left the conversation"
        else:
            text = f"[{turn.action_type}] {turn.argument}"
        steps.setdefault(turn.index, []).append((sender, "Environment", text))
    messages = [first_turn] + [steps[i] for i in sorted(steps)]
    rewards: list[Any] = []
    for agent in episode.agents:
        scores = episode.judge_scores.get(agent)
        if scores:
            overall = scores.get("overall", sum(scores.values()) / len(scores))
            rewards.append((overall, dict(scores)))
        else:
            rewards.append(0.0)
    reasoning = "\n".join(
        f"{by_agent[a]} {dim}: {text}" for a, dims in episode.judge_reasoning.items() for dim, text in dims.items()
    )
    return {
        "pk": episode.id,
        "environment": episode.scenario.id,
        "agents": [c.id for c in episode.characters],
        "tag": tag,
        "models": [episode.agent_models.get(a, "") for a in episode.agents],
        "messages": messages,
        "reasoning": reasoning,
        "rewards": rewards,
        "rewards_prompt": "",
    }


def episode_rows(episodes: Iterable[Episode]) -> list[dict[str, Any]]:
    """One flat row per episode, JSON-typed, for tables and `datasets`."""
    rows = []
    for ep in episodes:
        rows.append(
            {
                "id": ep.id,
                "scenario_id": ep.scenario.id,
                "situation": ep.scenario.situation,
                "characters": [c.id for c in ep.characters],
                "agents": list(ep.agents),
                "models": [ep.agent_models.get(a, "") for a in ep.agents],
                "turns": [asdict(t) for t in ep.turns],
                "end_reason": ep.end_reason,
                "judge_scores": json.dumps(ep.judge_scores),
                "seed": ep.seed if ep.seed is not None else -1,
                "package_version": ep.package_version,
            }
        )
    return rows


def to_hf_dataset(episodes: Iterable[Episode]) -> Any:
    """A Hugging Face `datasets.Dataset` with one row per episode (needs the `datasets` package)."""
    try:
        import datasets
    except ImportError as exc:
        raise ImportError("to_hf_dataset needs the 'datasets' package: pip install datasets") from exc
    return datasets.Dataset.from_list(episode_rows(episodes))
