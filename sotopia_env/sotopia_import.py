"""Import Sotopia's public data: EnvironmentProfile, AgentProfile, RelationshipProfile, EnvironmentList
and EnvAgentComboStorage records, as JSON (a list, one object, or an object keyed by pk) or JSONL.

The importer reads each record by its fields, so one file may mix kinds (as some dumps do):
- `scenario` + `agent_goals` -> Scenario
- `first_name` + `last_name` -> Character
- `agent_1_id` + `agent_2_id` -> a relationship between two characters: recognised and checked, not kept.
  The scenario carries the relationship its roles have, and Sotopia's combos (below) already pair
  characters whose relationship fits the scenario.
- `environments` (+ `agent_index`, `name`) -> an environment list; a list named like "*hard*" marks its
  environments hard
- `env_id` + `agent_ids` -> a character pairing for a scenario (Sotopia's env-agent combos)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .jsonio import JSONFileError, read_json, read_records, write_json_atomic, write_jsonl_atomic
from .scenarios import Character, Relationship, Role, Scenario, ScenarioFileError

_HINT = re.compile(r"<(extra_info|clarification_hint|strategy_hint)>(.*?)</\1>", re.S)
_HINT_LABEL = {"extra_info": "Extra information", "clarification_hint": "Hint", "strategy_hint": "Strategy hint"}


@dataclass
class SotopiaImport:
    scenarios: dict[str, Scenario] = field(default_factory=dict)
    characters: dict[str, Character] = field(default_factory=dict)
    pairings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    hard_ids: set[str] = field(default_factory=set)


def _records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    try:
        if path.suffix == ".jsonl":
            out = read_records(path)
        else:  # Sotopia's dumps add one shape to `read_records`' JSON ones: an object keyed by pk
            data = read_json(path)
            if isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()) and not _kind(data):
                out = [(f"record {k!r}", {"pk": k, **v}) for k, v in data.items()]
            elif isinstance(data, list):
                out = [(f"record {i}", r) for i, r in enumerate(data)]
            else:
                out = [("record 0", data)]
    except JSONFileError as exc:
        raise ScenarioFileError(str(exc)) from exc
    for where, record in out:
        if not isinstance(record, dict):
            raise ScenarioFileError(f"{path}: {where}: expected a JSON object, got {type(record).__name__}")
    return out


def _kind(record: dict[str, Any]) -> str | None:
    if "scenario" in record and "agent_goals" in record:
        return "environment"
    if "first_name" in record and "last_name" in record:
        return "agent"
    if "agent_1_id" in record and "agent_2_id" in record:
        return "relationship"
    if "environments" in record:
        return "environment_list"
    if "env_id" in record and "agent_ids" in record:
        return "combo"
    return None


def _goal_text(goal: str) -> str:
    return _HINT.sub(lambda m: f"({_HINT_LABEL[m.group(1)]}: {m.group(2).strip()})", goal).strip()


def _relationship(value: Any) -> Relationship:
    if isinstance(value, int):
        return Relationship.from_code(value)
    if isinstance(value, str):
        if value.isdigit():
            return Relationship.from_code(int(value))
        return Relationship(value)
    raise ValueError(f"relationship must be an integer 0..5 or a name, not {value!r}")


def _scenario(record: dict[str, Any]) -> Scenario:
    goals = record["agent_goals"]
    if not isinstance(goals, list) or len(goals) != 2:
        raise ValueError(f"field 'agent_goals': expected two goals, got {goals!r}")
    tags = tuple(t for t in re.split(r"[,\s]+", str(record.get("tag") or "")) if t)
    return Scenario(
        id=record.get("pk") or record.get("codename") or "",
        situation=record["scenario"],
        relationship=_relationship(record.get("relationship", 0)),
        roles=(Role(goal=_goal_text(goals[0])), Role(goal=_goal_text(goals[1]))),
        tags=tags,
        source=f"sotopia:{record.get('source') or 'unknown'}"
        + (f":{record['codename']}" if record.get("codename") else ""),
    )


def _character(record: dict[str, Any]) -> Character:
    personality = record.get("personality_and_values") or record.get("big_five") or "Not described."
    values = list(record.get("schwartz_personal_values") or []) + list(record.get("moral_values") or [])
    pk = record.get("pk") or f"{record['first_name']}_{record['last_name']}"
    return Character(
        id=re.sub(r"[^a-z0-9_\-]", "_", str(pk).lower()),
        name=f"{record['first_name']} {record['last_name']}".strip(),
        age=record.get("age") or 30,
        occupation=record.get("occupation") or "unspecified",
        pronouns=record.get("gender_pronoun") or "they/them",
        gender=record.get("gender") or "",
        personality=personality,
        values=tuple(values),
        decision_style=record.get("decision_making_style") or "",
        public_info=record.get("public_info") or "",
        secret=record.get("secret") or "",
    )


def import_sotopia(paths: Iterable[str | Path]) -> SotopiaImport:
    """Read Sotopia dump files into our data model; errors name the file, the record and the field."""
    result = SotopiaImport()
    agent_ids: dict[str, str] = {}  # Sotopia pk -> our character id
    combos: list[tuple[str, list[str]]] = []
    lists: list[dict[str, Any]] = []
    for path in map(Path, paths):
        if not path.exists():
            raise ScenarioFileError(f"{path}: no such file")
        for where, record in _records(path):
            kind = _kind(record)
            try:
                if kind == "environment":
                    scenario = _scenario(record)
                    if scenario.id in result.scenarios:
                        raise ScenarioFileError(f"{path}: {where}: duplicate environment pk {scenario.id!r}")
                    result.scenarios[scenario.id] = scenario
                elif kind == "agent":
                    character = _character(record)
                    if character.id in result.characters:
                        raise ScenarioFileError(f"{path}: {where}: duplicate agent pk {character.id!r}")
                    result.characters[character.id] = character
                    agent_ids[str(record.get("pk") or character.id)] = character.id
                elif kind == "relationship":
                    _relationship(record["relationship"])  # checked, then left: see the module docstring
                elif kind == "environment_list":
                    lists.append(record)
                elif kind == "combo":
                    combos.append((str(record["env_id"]), [str(a) for a in record["agent_ids"]]))
                else:
                    raise ScenarioFileError(
                        f"{path}: {where}: not a Sotopia EnvironmentProfile, AgentProfile, RelationshipProfile, "
                        f"EnvironmentList or EnvAgentComboStorage record (keys: {sorted(record)[:8]})"
                    )
            except ValidationError as exc:
                fields = "; ".join(f"field '{'.'.join(map(str, e['loc']))}': {e['msg']}" for e in exc.errors())
                raise ScenarioFileError(f"{path}: {where} (pk {record.get('pk', '?')!r}): {fields}") from exc
            except (KeyError, ValueError) as exc:
                if isinstance(exc, ScenarioFileError):
                    raise
                raise ScenarioFileError(f"{path}: {where} (pk {record.get('pk', '?')!r}): {exc}") from exc

    for env_list in lists:
        envs = [str(e) for e in env_list.get("environments", [])]
        if "hard" in str(env_list.get("name", "")).lower():
            result.hard_ids.update(envs)
    for env_id, agents in combos:
        if len(agents) != 2:
            continue
        a, b = (agent_ids.get(x, x) for x in agents)
        if env_id in result.scenarios and a in result.characters and b in result.characters:
            result.pairings.setdefault(env_id, []).append((a, b))
    for sid in result.hard_ids & set(result.scenarios):
        s = result.scenarios[sid]
        result.scenarios[sid] = s.model_copy(update={"tags": tuple(dict.fromkeys((*s.tags, "hard")))})
    return result


def write_library(result: SotopiaImport, out_dir: str | Path) -> dict[str, Path]:
    """Write an import as our own files (scenarios.jsonl, characters.jsonl, pairings.json) for reuse."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "scenarios": out / "scenarios.jsonl",
        "characters": out / "characters.jsonl",
        "pairings": out / "pairings.json",
    }
    write_jsonl_atomic(paths["scenarios"], result.scenarios.values())
    write_jsonl_atomic(paths["characters"], result.characters.values())
    write_json_atomic(paths["pairings"], result.pairings)
    return paths
