"""Import Sotopia's episodes into our `Episode` records.

Two formats, told apart by their fields (a file may be JSON: a list, one object, or an object keyed by pk;
or JSONL):
- the native `EpisodeLog`: `pk, environment, agents, tag, models, messages, reasoning, rewards`;
- the released-data serialization (Sotopia's `sotopia_episodes_v1.jsonl`, Sotopia-π's episodes):
  `episode_id, environment_id, agent_ids, experiment_tag, experiment_model_name_pairs, raw_messages,
  raw_rewards, scenario, codename, agents_background, social_goals, social_interactions, reasoning, rewards`.

`messages` holds one list per turn of (sender, receiver, text) triples. The first list is the context the
`Environment` sends each agent (background and goal), not a turn; later lists hold each agent's action as
Sotopia renders it (`said: "..."`, `did nothing`, `left the conversation`, `[non-verbal communication] ...`,
`[action] ...`) and the observations the Environment sends back, which we skip. In Sotopia's round-robin
mode the agent that waits says `did nothing`; when every step's actor is the agent whose turn it is, the
episode is imported as round-robin (one turn per step, as our env records it), else as simultaneous.

Scenario and characters come from Sotopia profiles when the caller passes them (`import_sotopia` of the
profile files, or an imported library); otherwise they are rebuilt from the episode's own text (scenario,
backgrounds, goals) and `meta["sotopia"]["rebuilt"]` says which parts were. A record that cannot be read is
reported by file and line (or record) and skipped; the others are imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .episode import Episode, Turn
from .jsonio import JSONFileError, jsonl_lines, parse_line, read_json
from .scenarios import Character, Role, Scenario, load_characters, load_scenarios
from .sotopia_import import SotopiaImport, _goal_text

# Sotopia-EVAL's dimension names as Sotopia writes them in `rewards` (the same names as rewards.dimensions,
# which this package cannot import); Sotopia also stores its mean as "overall_score".
SOTOPIA_DIMENSIONS = (
    "believability",
    "relationship",
    "knowledge",
    "secret",
    "social_rules",
    "financial_and_material_benefits",
    "goal",
)
SOTOPIA_MAX_TURNS = 20  # Sotopia's default turn limit; our replay shows it in each prompt's footer
ENVIRONMENT = "Environment"

_SAID = re.compile(r'^said:\s*"(.*)"$', re.S)
_BRACKETED = re.compile(r"^\[(non-verbal communication|action)\]\s*(.*)$", re.S)
_TAGS = re.compile(r"</?(root|p)\b[^>]*>")  # Sotopia's per-viewer markup around backgrounds
_BIO = re.compile(
    r"is an? (?P<age>\d+)-year-old (?:(?P<gender>male|female|nonbinary|non-binary) )?(?P<occupation>[^.]+)\.\s*"
    r"(?:(?P<pronouns>[^.]*?) pronouns\.)?",
    re.I,
)
_PERSONALITY = re.compile(r"Personality and values description:\s*(.*?)(?:\s+\S+'s secrets:|$)", re.S)
_SECRET = re.compile(r"'s secrets:\s*(.*)$", re.S)


class EpisodeRecordError(ValueError):
    """One Sotopia episode record that cannot be imported; the message says which field and why."""


@dataclass
class EpisodeImport:
    episodes: list[Episode] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "<file>: <line or record>: <why>", one per skipped record


def episode_kind(record: dict[str, Any]) -> str | None:
    """ "episode_log", "released" or None (not an episode) for one record, by its fields."""
    if "raw_messages" in record and ("episode_id" in record or "environment_id" in record):
        return "released"
    if "messages" in record and "environment" in record:
        return "episode_log"
    return None


def read_records(path: Path) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(where, record) pairs of a JSON or JSONL file, and the problems of the lines that are not JSON objects.

    A JSONL line that does not parse (not JSON, not UTF-8, or holding NaN or Infinity) costs that line only:
    released dumps are large and a bad line should not cost the rest, so this reader reports instead of
    raising like `jsonio.read_records`. Lines are split on "\\n" only (`jsonio.jsonl_lines`): U+2028 and its
    kin inside a record are text. A JSON file that does not parse costs the file."""
    raw: list[tuple[str, Any]] = []
    problems: list[str] = []
    if path.suffix == ".jsonl":
        try:
            data = path.read_bytes()
        except OSError as exc:
            return [], [f"{path}: cannot read: {exc}"]
        for lineno, line in jsonl_lines(data, appended=False):
            try:
                raw.append((f"line {lineno}", parse_line(path, lineno, line)))
            except JSONFileError as exc:
                problems.append(f"{path}: {exc.where}: {exc.why}; skipped")
    else:
        try:
            data = read_json(path)
        except JSONFileError as exc:
            return [], [f"{exc}; nothing imported from it"]
        if isinstance(data, list):
            raw = [(f"record {i}", r) for i, r in enumerate(data)]
        elif (
            isinstance(data, dict)
            and data
            and not episode_kind(data)
            and all(isinstance(v, dict) for v in data.values())
        ):
            raw = [(f"record {k!r}", {"pk": k, **v}) for k, v in data.items()]  # a dump keyed by pk
        else:
            raw = [("record 0", data)]
    records = []
    for where, record in raw:
        if isinstance(record, dict):
            records.append((where, record))
        else:
            problems.append(f"{path}: {where}: expected a JSON object, got {type(record).__name__}; skipped")
    return records, problems


def is_episode_file(path: str | Path) -> bool:
    """Whether a file holds Sotopia episodes (its first readable record is one), not profiles."""
    records, _ = read_records(Path(path))
    return bool(records) and episode_kind(records[0][1]) is not None


# --- one record ---------------------------------------------------------------------------------


def parse_action(text: str) -> tuple[str, str]:
    """(our action type, argument) of an action as Sotopia renders it in `messages`."""
    text = text.strip()
    if text == "did nothing":
        return "none", ""
    if text == "left the conversation":
        return "leave", ""
    said = _SAID.match(text)
    if said:
        return "speak", said.group(1)
    bracketed = _BRACKETED.match(text)
    if bracketed:
        return bracketed.group(1), bracketed.group(2).strip()
    raise EpisodeRecordError(
        f'action text {text[:60]!r} is none of Sotopia\'s forms (said: "...", did nothing, left the conversation, '
        "[non-verbal communication] ..., [action] ...)"
    )


def _triples(messages: Any) -> list[list[tuple[str, str, str]]]:
    if not isinstance(messages, list) or not messages:
        raise EpisodeRecordError("field 'messages': expected a non-empty list of turns")
    out = []
    for t, turn in enumerate(messages):
        if not isinstance(turn, list):
            raise EpisodeRecordError(f"field 'messages', turn {t}: expected a list of [sender, receiver, text]")
        triples = []
        for m in turn:
            if not (isinstance(m, (list, tuple)) and len(m) == 3 and all(isinstance(x, str) for x in m)):
                raise EpisodeRecordError(f"field 'messages', turn {t}: {m!r} is not [sender, receiver, text]")
            triples.append((m[0], m[1], m[2]))
        out.append(triples)
    return out


_LABEL = re.compile(r"^[A-Z][\w.'-]*(?: [\w.'-]+){0,4}: ")  # "Participants: ", "Ben's goal: ", ...


def _context_fields(text: str, name: str) -> dict[str, str]:
    """Scenario, this agent's background and goal from the context the Environment sent it. Reads Sotopia's
    layout (`Scenario:`, `<name>'s background:`, `<name>'s goal:`) and our export's (`Scenario:`, `Goal:`)."""
    labels = {"Scenario: ": "scenario", f"{name}'s background: ": "background", f"{name}'s goal: ": "goal"}
    labels["Goal: "] = "goal"
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in _TAGS.sub("", text).splitlines():
        label = next((k for k in labels if line.startswith(k)), None)
        if label is not None:
            current = found.setdefault(labels[label], [])
            current.append(line[len(label) :].strip())
        elif _LABEL.match(line):
            current = None  # another field (Participants, the partner's background or goal) ends this one
        elif current is not None:
            current.append(line.strip())
    return {k: "\n".join(v).strip() for k, v in found.items()}


def _sanitize_id(text: str, pattern: str = r"[^A-Za-z0-9_\-.:]") -> str:
    return re.sub(pattern, "_", text.strip()) or "unknown"


def character_id(pk: str) -> str:
    """Our character id for a Sotopia agent pk (the same rule as `sotopia_import`'s)."""
    return re.sub(r"[^a-z0-9_\-]", "_", str(pk).lower())


def rebuild_character(name: str, background: str) -> Character:
    """A character from Sotopia's background sentence ("<name> is a 35-year-old female chef. She/her
    pronouns. <public info> Personality and values description: ... <name>'s secrets: ..."); what the text
    does not say gets a neutral default."""
    text = " ".join(_TAGS.sub("", background).split())
    bio = _BIO.search(text)
    personality = _PERSONALITY.search(text)
    secret = _SECRET.search(text)
    rest = text[bio.end() :] if bio else text
    public = re.split(r"Personality and values description:|\s*\S+'s secrets:", rest)[0].strip()
    return Character(
        id=character_id(name.replace(" ", "_")),
        name=name[:100],
        age=min(110, max(18, int(bio.group("age")))) if bio else 30,
        occupation=(bio.group("occupation").strip() if bio else "") or "unspecified",
        pronouns=((bio.group("pronouns") or "").strip() if bio else "") or "they/them",
        gender=(bio.group("gender") or "").lower() if bio else "",
        personality=(personality.group(1).strip() if personality else "") or "Not described.",
        public_info=public,
        secret=secret.group(1).strip() if secret else "",
    )


def judge_scores_of(reward: Any) -> tuple[dict[str, float], float | None]:
    """(the seven dimension scores, Sotopia's overall) of one agent's reward: `[overall, {dimension: score}]`,
    `{dimension: score}` or a bare overall number (then no dimension scores)."""
    if isinstance(reward, (int, float)) and not isinstance(reward, bool):
        return {}, float(reward)
    overall = None
    if isinstance(reward, (list, tuple)) and len(reward) == 2 and isinstance(reward[1], dict):
        overall, reward = float(reward[0]), reward[1]
    if not isinstance(reward, dict):
        raise EpisodeRecordError(f"reward {reward!r} is not [overall, {{dimension: score}}], a dict or a number")
    scores = {}
    for key, value in reward.items():
        if key in SOTOPIA_DIMENSIONS:
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise EpisodeRecordError(f"reward dimension {key!r}: {value!r} is not a number")
            scores[key] = float(value)
        elif key in ("overall_score", "overall"):
            overall = float(value) if overall is None else overall
    return scores, overall


def _models(models: Any) -> tuple[str, list[str]]:
    """(judge model, [agent 1 model, agent 2 model]); Sotopia writes [evaluator, agent1, agent2]."""
    models = [str(m) for m in models or []]
    if len(models) == 3:
        return models[0], models[1:]
    if len(models) == 2:
        return "", models
    return "", ["", ""]


def _turns(
    steps: list[list[tuple[str, str, str]]], names: Sequence[str], agents: Sequence[str]
) -> tuple[list[Turn], str]:
    """Our turns from Sotopia's action lists (the context list excluded), and the turn mode they fit."""
    seat_of = {n: i for i, n in enumerate(names)}
    parsed: list[dict[int, tuple[str, str]]] = []
    for s, step in enumerate(steps, 1):
        acts: dict[int, tuple[str, str]] = {}
        for sender, _receiver, text in step:
            if sender == ENVIRONMENT:
                continue  # the observation sent back to an agent
            if sender not in seat_of:
                raise EpisodeRecordError(f"turn {s}: sender {sender!r} is neither of the agents {list(names)}")
            try:
                acts[seat_of[sender]] = parse_action(text)
            except EpisodeRecordError as exc:
                raise EpisodeRecordError(f"turn {s}, {sender}: {exc}") from None
        if acts:
            parsed.append(acts)
    round_robin = all(seat == s % 2 for s, acts in enumerate(parsed) for seat, act in acts.items() if act[0] != "none")
    turns = []
    for s, acts in enumerate(parsed):
        seats = [s % 2] if round_robin else sorted(acts)
        for seat in seats:
            kind, argument = acts.get(seat, ("none", ""))
            turns.append(Turn(index=s, agent=agents[seat], character=names[seat], action_type=kind, argument=argument))
    return turns, "round-robin" if round_robin else "simultaneous"


def _silent_runs(turns: list[Turn]) -> tuple[int, int]:
    """(longest run of steps in which nobody spoke, the run at the end)."""
    spoke: dict[int, bool] = {}
    for t in turns:
        spoke[t.index] = spoke.get(t.index, False) or t.is_speech
    longest = run = 0
    for index in sorted(spoke):
        run = 0 if spoke[index] else run + 1
        longest = max(longest, run)
    return longest, run


@dataclass
class _Source:
    """The fields both formats share, under one set of names."""

    format: str
    id: str
    environment: str
    agent_pks: list[str]
    tag: str
    models: Any
    messages: Any
    rewards: Any
    reasoning: str
    scenario_text: str = ""
    codename: str = ""
    backgrounds: dict[str, str] = field(default_factory=dict)
    goals: dict[str, str] = field(default_factory=dict)


def _source(record: dict[str, Any]) -> _Source:
    kind = episode_kind(record)
    if kind == "released":
        return _Source(
            format="released",
            id=str(record.get("episode_id") or ""),
            environment=str(record.get("environment_id") or ""),
            agent_pks=[str(a) for a in record.get("agent_ids") or []],
            tag=str(record.get("experiment_tag") or ""),
            models=record.get("experiment_model_name_pairs"),
            messages=record.get("raw_messages"),
            rewards=record.get("raw_rewards") or record.get("rewards"),
            reasoning=str(record.get("reasoning") or ""),
            scenario_text=str(record.get("scenario") or ""),
            codename=str(record.get("codename") or ""),
            backgrounds={str(k): str(v) for k, v in (record.get("agents_background") or {}).items()},
            goals={str(k): str(v) for k, v in (record.get("social_goals") or {}).items()},
        )
    if kind == "episode_log":
        return _Source(
            format="episode_log",
            id=str(record.get("pk") or ""),
            environment=str(record.get("environment") or ""),
            agent_pks=[str(a) for a in record.get("agents") or []],
            tag=str(record.get("tag") or ""),
            models=record.get("models"),
            messages=record.get("messages"),
            rewards=record.get("rewards"),
            reasoning=str(record.get("reasoning") or ""),
        )
    raise EpisodeRecordError(
        f"not a Sotopia episode (an EpisodeLog has 'messages' and 'environment'; the released JSONL has "
        f"'episode_id' and 'raw_messages'); keys: {sorted(record)[:8]}"
    )


def episode_from_record(record: dict[str, Any], profiles: SotopiaImport | None = None) -> Episode:
    """One Sotopia episode (either format) as our `Episode`; raises `EpisodeRecordError` saying what is wrong."""
    src = _source(record)
    if not src.id:
        raise EpisodeRecordError("no episode id ('pk' or 'episode_id')")
    steps = _triples(src.messages)
    context = [m for m in steps[0] if m[0] == ENVIRONMENT]
    names = [receiver for _sender, receiver, _text in context] or list(src.backgrounds or src.goals)
    if len(names) != 2 or names[0] == names[1]:
        raise EpisodeRecordError(f"expected two agents in the first turn's context messages, found {names}")
    contexts = [_context_fields(text, receiver) for _sender, receiver, text in context] or [{}, {}]
    rebuilt: list[str] = []

    profiles = profiles or SotopiaImport()
    scenario = profiles.scenarios.get(src.environment)
    if scenario is None:
        goals = [src.goals.get(n) or contexts[i].get("goal", "") for i, n in enumerate(names)]
        situation = src.scenario_text or contexts[0].get("scenario", "")
        if not situation or not all(goals):
            raise EpisodeRecordError(
                f"environment {src.environment!r} is not among the given profiles and the episode lacks its own "
                "scenario or goal text; pass the EnvironmentProfile file (or --library) too"
            )
        scenario = Scenario(
            id=_sanitize_id(src.environment or src.codename or src.id),
            situation=situation,
            roles=(Role(goal=_goal_text(goals[0])), Role(goal=_goal_text(goals[1]))),
            source="sotopia-episode" + (f":{src.codename}" if src.codename else ""),
        )
        rebuilt.append("scenario")
    characters = []
    for seat, name in enumerate(names):
        pk = src.agent_pks[seat] if seat < len(src.agent_pks) else ""
        known = profiles.characters.get(character_id(pk)) if pk else None
        if known is None:
            background = src.backgrounds.get(name) or contexts[seat].get("background", "")
            known = rebuild_character(name, background)
            rebuilt.append(f"character {seat}")
        characters.append(known)
    if characters[0].id == characters[1].id:
        raise EpisodeRecordError(f"both seats are played by the same character {characters[0].id!r}")

    agents = ("agent_0", "agent_1")
    turns, mode = _turns(steps[1:], names, agents)
    longest_silence, final_silence = _silent_runs(turns)
    steps_played = max((t.index for t in turns), default=-1) + 1
    if any(t.action_type == "leave" for t in turns):
        end_reason = "leave"
    elif final_silence >= 2:  # Sotopia ends an episode after two steps in which nobody spoke
        end_reason = "silence"
    elif steps_played >= SOTOPIA_MAX_TURNS:
        end_reason = "turn_limit"
    else:
        end_reason = ""  # the record does not say why it stopped

    judge_model, agent_models = _models(src.models)
    rewards = src.rewards if isinstance(src.rewards, list) else []
    judge_scores: dict[str, dict[str, float]] = {}
    overall: dict[str, float | None] = {}
    incomplete: list[str] = []
    for seat, agent in enumerate(agents):
        if seat >= len(rewards):
            continue
        scores, overall[agent] = judge_scores_of(rewards[seat])
        if len(scores) == len(SOTOPIA_DIMENSIONS):
            judge_scores[agent] = scores
        elif scores:
            incomplete.append(f"{agent}: imported scores lack {sorted(set(SOTOPIA_DIMENSIONS) - set(scores))}")
    meta: dict[str, Any] = {
        "turn_mode": mode,
        "max_turns": max(SOTOPIA_MAX_TURNS, steps_played),
        # Sotopia's own stale-turn rule ended the episode already; ours must not end a replay earlier.
        "max_silent_turns": max(4, longest_silence + 1),
        "max_utterance_chars": max([2000] + [len(t.argument) for t in turns]),
        "strict_turns": False,
        "sotopia": {
            "format": src.format,
            "pk": src.id,
            "environment": src.environment,
            "agents": src.agent_pks,
            "tag": src.tag,
            "models": src.models,
            "overall": overall,
            "reasoning": src.reasoning,
            "rebuilt": rebuilt,
        },
    }
    if incomplete:
        meta["sotopia"]["incomplete_scores"] = incomplete
    return Episode(
        id=src.id,
        scenario=scenario,
        characters=(characters[0], characters[1]),
        agents=agents,
        agent_models={a: m for a, m in zip(agents, agent_models) if m},
        turns=turns,
        end_reason=end_reason,
        judge_scores=judge_scores,
        judge_model=judge_model if judge_scores else "",
        meta=meta,
    )


# --- files ---------------------------------------------------------------------------------------


def load_library(folder: str | Path, base: SotopiaImport | None = None) -> SotopiaImport:
    """The profiles of a folder `import-sotopia` wrote (scenarios.jsonl, characters.jsonl), with `base`'s
    (profiles imported in the same run) taking precedence."""
    root = Path(folder)
    missing = [n for n in ("scenarios.jsonl", "characters.jsonl") if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--library {root}: missing {', '.join(missing)}; write it with `sotopia-env import-sotopia`"
        )
    base = base or SotopiaImport()
    return SotopiaImport(
        scenarios={**load_scenarios(root / "scenarios.jsonl"), **base.scenarios},
        characters={**load_characters(root / "characters.jsonl"), **base.characters},
        pairings=base.pairings,
        hard_ids=base.hard_ids,
    )


def import_episodes(paths: Iterable[str | Path], profiles: SotopiaImport | None = None) -> EpisodeImport:
    """Every Sotopia episode in `paths`; what cannot be read is reported in `problems` (file and line or
    record, and why) and skipped. A repeated episode id keeps its first record."""
    result = EpisodeImport()
    seen: set[str] = set()
    for path in map(Path, paths):
        if not path.exists():
            result.problems.append(f"{path}: no such file")
            continue
        records, problems = read_records(path)
        result.problems += problems
        for where, record in records:
            try:
                episode = episode_from_record(record, profiles)
            except (EpisodeRecordError, ValidationError, ValueError, TypeError) as exc:
                reason = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
                if isinstance(exc, ValidationError):
                    loc = ".".join(map(str, exc.errors()[0]["loc"]))
                    reason = f"field '{loc}': {reason}"
                result.problems.append(f"{path}: {where}: {reason}; skipped")
                continue
            if episode.id in seen:
                result.problems.append(f"{path}: {where}: episode {episode.id!r} appears twice; kept the first")
                continue
            seen.add(episode.id)
            result.episodes.append(episode)
    return result
