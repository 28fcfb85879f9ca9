"""`EpisodeStart`: where an episode starts (scenario, characters, the learner's seat, seed), and the one rule for
the other seat.

Every caller that starts episodes uses it: the runner (`agents.runner.EpisodeJob`), the benchmark's cells, GRPO
in the env, the TRL rollout, and the trainer shims (OpenEnv, verifiers, TRL tools, SkyRL). A start becomes a reset
with `env.reset(seed=start.seed, options=start.options())`; `SocialGymEnv` also reads the seat from those options.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

AGENTS = ("agent_0", "agent_1")
SeatChoice = Literal[0, 1, "both"]


def other_seat(seat: int) -> int:
    """The one rule for the other seat: two seats, 0 and 1."""
    if seat not in (0, 1):
        raise ValueError(f"a seat is 0 or 1, not {seat!r}")
    return 1 - seat


def other_agent(agent: str) -> str:
    """The agent in the other seat: agent_0 <-> agent_1."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}; the agents are {list(AGENTS)}")
    return AGENTS[other_seat(AGENTS.index(agent))]


@dataclass(frozen=True)
class EpisodeStart:
    """Where an episode starts.

    scenario: the scenario id.
    seed: the env's reset seed; it draws the character pairing when `characters` is None, and keys seeded policies.
    seat: the seat the learner (or the policy under test) holds: 0 or 1, the partner holding the other one
        (`other_seat`); "both" for self-play, where no partner plays.
    characters: the two character ids in seat order (agent_0's first); None draws a pairing from the seed.
    """

    scenario: str
    seed: int | None = None
    seat: SeatChoice = 0
    characters: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.scenario, str) or not self.scenario:
            raise ValueError(f"EpisodeStart.scenario must be a scenario id, not {self.scenario!r}")
        if self.seat not in (0, 1, "both") or isinstance(self.seat, bool):
            raise ValueError(f"EpisodeStart.seat must be 0, 1 or 'both', not {self.seat!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"EpisodeStart.seed must be an int or None, not {self.seed!r}")
        if self.characters is not None:
            pair = tuple(self.characters)
            if len(pair) != 2 or not all(isinstance(c, str) and c for c in pair):
                raise ValueError(f"EpisodeStart.characters must be two character ids, not {self.characters!r}")
            if pair[0] == pair[1]:
                raise ValueError(f"EpisodeStart.characters: a character cannot talk to itself ({pair[0]!r} twice)")
            object.__setattr__(self, "characters", pair)

    @property
    def learners(self) -> tuple[str, ...]:
        """The agents the learner plays: one, or both in self-play."""
        return AGENTS if self.seat == "both" else (AGENTS[self.seat],)

    @property
    def learner(self) -> str:
        """The learner's agent; only for a start with one learner seat."""
        if self.seat == "both":
            raise ValueError("this start is self-play (seat='both'): the learner holds both seats")
        return AGENTS[self.seat]

    @property
    def partner(self) -> str | None:
        """The partner's agent (the other seat), or None in self-play."""
        return None if self.seat == "both" else AGENTS[other_seat(self.seat)]

    def options(self) -> dict[str, Any]:
        """The reset options of this start: `env.reset(seed=start.seed, options=start.options())`. `seat` is read by
        `SocialGymEnv` and its vector form; `SocialParallelEnv` ignores it (both seats are played from outside)."""
        out: dict[str, Any] = {"scenario": self.scenario, "seat": self.seat}
        if self.characters is not None:
            out["characters"] = self.characters
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: dataset rows, OpenEnv reset arguments, SkyRL extras."""
        out: dict[str, Any] = {"scenario": self.scenario, "seed": self.seed, "seat": self.seat}
        if self.characters is not None:
            out["characters"] = list(self.characters)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpisodeStart:
        """A start from `to_dict`'s keys; other keys are ignored (dataset rows carry more). A seat may be given as an
        agent name, and the older `learners` list (one or two agent names) is read too."""
        if not isinstance(data, Mapping) or "scenario" not in data:
            raise ValueError(
                f"an episode start needs at least a 'scenario' (and optionally 'seed', 'seat', 'characters'), got "
                f"{dict(data) if isinstance(data, Mapping) else data!r}"
            )
        seat: Any = data.get("seat", 0)
        if "seat" not in data and "learners" in data:  # the TRL rollout's older rows
            learners = tuple(data["learners"])
            seat = "both" if set(learners) == set(AGENTS) else (learners[0] if len(learners) == 1 else learners)
        if isinstance(seat, str) and seat in AGENTS:
            seat = AGENTS.index(seat)
        elif isinstance(seat, str) and seat in ("0", "1"):
            seat = int(seat)
        characters = data.get("characters")
        seed = data.get("seed")
        return cls(
            scenario=data["scenario"],
            seed=int(seed) if isinstance(seed, (int, float, str)) and str(seed).lstrip("-").isdigit() else seed,
            seat=seat,
            characters=tuple(characters) if characters is not None else None,
        )

    @classmethod
    def from_json(cls, text: str) -> EpisodeStart:
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"an episode start is a JSON object, not {str(text)[:80]!r}") from exc
        return cls.from_dict(data)
