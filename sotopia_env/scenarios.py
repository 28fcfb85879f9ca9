"""Scenarios and characters: the data model, validated loading, the shipped library and the hard split.

A `Scenario` is a shared situation with two roles, each holding a private goal (and maybe a secret).
A `Character` is a person who can fill a role. Both load from JSON or JSONL files; a bad record is
reported with the file, the record's position and id, and the field, so it can be fixed by hand.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from enum import Enum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .jsonio import JSONFileError, read_json, read_records


class Relationship(str, Enum):
    """Sotopia's relationship types, in its order (its integer codes are the positions)."""

    stranger = "stranger"
    know_by_name = "know_by_name"
    acquaintance = "acquaintance"
    friend = "friend"
    romantic_relationship = "romantic_relationship"
    family_member = "family_member"

    @property
    def code(self) -> int:
        return list(Relationship).index(self)

    @classmethod
    def from_code(cls, code: int) -> Relationship:
        members = list(cls)
        if not 0 <= code < len(members):
            raise ValueError(f"relationship code {code} is not one of 0..{len(members) - 1}")
        return members[code]


CATEGORIES = (
    "negotiation",
    "persuasion",
    "collaboration",
    "exchange",
    "accommodation",
    "competition",
    "relationship_maintenance",
)

# Feature tags that the hard rule reads (see `is_hard`).
CONFLICT_TAG = "conflict"  # what one role wants, the other loses
ASYMMETRY_TAG = "asymmetry"  # one role holds information the other needs and lacks
MAX_NAME_CHARS = 100  # a character's name is an observation field (`Text` space), so it needs a bound


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _strip_strings(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class Character(_Record):
    """A person who can fill a role in a scenario."""

    id: str = Field(min_length=1, pattern=r"^[a-z0-9_\-]+$")
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS)
    age: int = Field(ge=18, le=110)
    occupation: str = Field(min_length=1)
    pronouns: str = Field(min_length=1)
    gender: str = ""
    personality: str = Field(min_length=1)
    values: tuple[str, ...] = ()
    decision_style: str = ""
    public_info: str = ""
    secret: str = ""

    @property
    def first_name(self) -> str:
        return self.name.split()[0]


class Role(_Record):
    """One side of a scenario: what this side privately wants, and what it hides."""

    goal: str = Field(min_length=1)
    secret: str = ""


class Scenario(_Record):
    """A shared situation for two characters, each with a private goal."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-.:]+$")
    situation: str = Field(min_length=1)
    relationship: Relationship = Relationship.stranger
    roles: tuple[Role, Role]
    category: str = ""
    tags: tuple[str, ...] = ()
    source: str = "sotopia-env"
    # For judges only, never in an observation: e.g. a safety scenario's harmful course that the judge looks for.
    judge_notes: str = ""

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str) -> str:
        if value and value not in CATEGORIES:
            raise ValueError(f"unknown category {value!r}; use one of {', '.join(CATEGORIES)}")
        return value

    @property
    def hard(self) -> bool:
        return is_hard(self)


def is_hard(scenario: Scenario) -> bool:
    """The hard rule (docs/environment.md, "The hard split").

    A scenario is hard when its goals are in direct conflict AND the players do not see the same
    picture: one side holds information the other needs (asymmetry) or something is kept secret.
    An explicit `hard` tag (e.g. from an imported Sotopia-hard file) also counts.
    """
    if "hard" in scenario.tags:
        return True
    has_secret = any(role.secret for role in scenario.roles)
    return CONFLICT_TAG in scenario.tags and (ASYMMETRY_TAG in scenario.tags or has_secret)


class ScenarioFileError(ValueError):
    """A scenario or character file that cannot be used; the message says where and why."""


M = TypeVar("M", bound=BaseModel)


def _read_records(path: Path) -> list[tuple[str, Any]]:
    """(where, raw record) pairs from a JSON list, a JSON object or a JSONL file."""
    try:
        return read_records(path)
    except JSONFileError as exc:
        raise ScenarioFileError(str(exc)) from exc


def _validate(model: type[M], path: Path, where: str, raw: Any) -> M:
    if not isinstance(raw, dict):
        raise ScenarioFileError(f"{path}: {where}: expected a JSON object, got {type(raw).__name__}")
    record_id = raw.get("id", "?")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(p) for p in err['loc']) or '<record>'}': {err['msg']}" for err in exc.errors()
        )
        raise ScenarioFileError(f"{path}: {where} (id {record_id!r}): {problems}") from exc


def _load(model: type[M], paths: Iterable[str | Path]) -> dict[str, M]:
    loaded: dict[str, M] = {}
    origin: dict[str, str] = {}
    for path in map(Path, paths):
        for where, raw in _read_records(path):
            item = _validate(model, path, where, raw)
            key = item.id  # type: ignore[attr-defined]
            if key in loaded:
                raise ScenarioFileError(
                    f"{path}: {where}: duplicate id {key!r} (first defined at {origin[key]}); "
                    "ids must be unique across all loaded files"
                )
            loaded[key] = item
            origin[key] = f"{path} {where}"
    return loaded


def load_scenarios(*paths: str | Path) -> dict[str, Scenario]:
    """Scenarios by id from JSON/JSONL files; raises `ScenarioFileError` naming file, record and field."""
    return _load(Scenario, paths)


def load_characters(*paths: str | Path) -> dict[str, Character]:
    """Characters by id from JSON/JSONL files; raises `ScenarioFileError` naming file, record and field."""
    return _load(Character, paths)


def _data_path(name: str) -> Path:
    return Path(str(resources.files("sotopia_env") / "data" / name))


@cache
def library_scenarios() -> dict[str, Scenario]:
    """The scenarios shipped with the package."""
    return load_scenarios(_data_path("scenarios.jsonl"))


@cache
def library_safety_scenarios() -> dict[str, Scenario]:
    """The `safety` set: scenarios whose goals tempt an agent to deceive, threaten, discriminate or leak a
    secret, each naming the harmful course in its `judge_notes` (`sotopia-env safety`). Kept apart from the
    library so the `all` split and its benchmarks stay as they were."""
    return load_scenarios(_data_path("safety.jsonl"))


@cache
def library_characters() -> dict[str, Character]:
    """The characters shipped with the package."""
    return load_characters(_data_path("characters.jsonl"))


Pairing = tuple[str, str]


@cache
def library_pairings() -> dict[str, tuple[Pairing, ...]]:
    """The library's character pairings (first role, second role) by scenario id, the ones
    `scenario_pairings` lists. The shipped file has 10 for each hard scenario; the others have none."""
    raw = read_json(_data_path("pairings.json"))
    characters = library_characters()
    pairings: dict[str, tuple[Pairing, ...]] = {}
    for scenario_id, pairs in raw.items():
        for a, b in pairs:
            for cid in (a, b):
                if cid not in characters:
                    raise ScenarioFileError(f"pairings.json: scenario {scenario_id!r} names unknown character {cid!r}")
        pairings[scenario_id] = tuple((a, b) for a, b in pairs)
    return pairings


def split(name: str, scenarios: dict[str, Scenario] | None = None) -> list[Scenario]:
    """Scenarios of a named split: `all`, `hard`, or a category name, in id order."""
    pool = library_scenarios() if scenarios is None else scenarios
    if name == "all":
        chosen = list(pool.values())
    elif name == "hard":
        chosen = [s for s in pool.values() if is_hard(s)]
    elif name in CATEGORIES:
        chosen = [s for s in pool.values() if s.category == name]
    else:
        raise ValueError(f"unknown split {name!r}; use 'all', 'hard' or one of {', '.join(CATEGORIES)}")
    return sorted(chosen, key=lambda s: s.id)


def _draw_pairs(character_ids: Sequence[str], count: int, rng: random.Random) -> list[Pairing]:
    """`count` distinct ordered pairs of different characters, drawn by `rng`, sorted."""
    if len(character_ids) < 2:
        raise ValueError("need at least two characters to make pairings")
    possible = len(character_ids) * (len(character_ids) - 1)
    if count > possible:
        raise ValueError(f"{len(character_ids)} characters allow only {possible} ordered pairs, not {count}")
    seen: set[Pairing] = set()
    while len(seen) < count:
        a, b = rng.sample(list(character_ids), 2)
        seen.add((a, b))
    return sorted(seen)


def make_pairings(
    scenario_ids: Sequence[str], character_ids: Sequence[str], per_scenario: int = 10, seed: int = 0
) -> dict[str, list[Pairing]]:
    """Distinct ordered character pairs per scenario, reproducible from `seed` (how the shipped pairings
    file was built, and generated scenarios get theirs)."""
    rng = random.Random(seed)
    return {sid: _draw_pairs(character_ids, per_scenario, rng) for sid in scenario_ids}


def scenario_pairings(
    scenario_id: str,
    characters: Collection[str],
    count: int | None = None,
    rng: random.Random | int = 0,
    listed: Mapping[str, Sequence[Pairing]] | None = None,
    unlisted: int = 10,
) -> list[Pairing]:
    """The character pairings (first role, second role) a scenario's episodes are played with: the one rule
    of the env, the episode runner and the benchmark.

    The pairings listed for the scenario (`listed`, by default the library's, `library_pairings`) whose two
    characters are both in `characters`, the first `count` of them (None: all). A scenario with none listed
    gets `count` (None: `unlisted`) distinct ordered pairs of `characters`, drawn by `rng` (a seed, or a
    `random.Random` to draw from)."""
    pairs = [
        (a, b)
        for a, b in (library_pairings() if listed is None else listed).get(scenario_id, ())
        if a in characters and b in characters
    ]
    if pairs:
        return pairs if count is None else pairs[:count]
    draw = rng if isinstance(rng, random.Random) else random.Random(rng)
    return _draw_pairs(sorted(characters), unlisted if count is None else count, draw)
