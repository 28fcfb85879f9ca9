"""Episodes as pages: the Jinja2 environment (autoescaped: every text from a file is shown as text), the
reward colour scale, and the rows the chat template draws. Shared by the server, `--export` and `play`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from rewards.dimensions import SOTOPIA_EVAL, DimensionSet, recorded_dimensions
from sotopia_env import Episode, Turn

from .charts import line_chart


@cache
def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("viewer", "templates"), autoescape=True, undefined=StrictUndefined, trim_blocks=True
    )
    env.globals["line_chart"] = line_chart
    env.filters["num"] = number
    return env


def number(value: Any, digits: int = 2, sign: bool = False) -> str:
    """A number as the pages show it; anything else from a file (a string where a score should be) is shown
    as written, marked, never a server error."""
    if value is None:
        return "n/a"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:{'+' if sign else ''}.{digits}f}"
    return f"{value!r} (not a number)"


def mapping(value: Any, name: str) -> dict[str, Any]:
    """A record's field that should map names to values; any other value is shown under its own name."""
    if value is None:
        return {}
    return value if isinstance(value, dict) else {name: value}


def page(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def reward_colour(value: float | None, scale: tuple[float, float] | None) -> str:
    """A background from red (the lowest value on the scale) through yellow to green (the highest); ""
    when there is nothing to compare (no value, or every value on the scale is the same)."""
    if value is None or scale is None or scale[1] <= scale[0]:
        return ""
    t = min(1.0, max(0.0, (value - scale[0]) / (scale[1] - scale[0])))
    return f"hsl({round(120 * t)}, 75%, 82%)"


@dataclass
class TurnRow:
    position: int  # index in episode.turns (a label file's turn_index)
    seat: int
    speaker: str
    action_type: str
    text: str
    speech: bool
    value: float | None  # what colours it: the label when a label file has one, else the recorded reward
    colour: str
    labels: dict[str, Any] = field(default_factory=dict)  # the label file's row for this utterance
    repairs: list[str] = field(default_factory=list)
    candidates: list[dict[str, Any]] = field(default_factory=list)  # on-policy training: the G sampled, scored

    @property
    def has_details(self) -> bool:
        return bool(self.labels or self.repairs or self.candidates)


def _candidates(episode: Episode, turn: Turn) -> list[dict[str, Any]]:
    """The G candidates of a learner turn in an on-policy training episode (trainers.online, turn credit):
    `meta["training"]["candidates"]` maps the env turn to [{"text", "action_type", "played", "reward"}]."""
    training = episode.meta.get("training")
    if not isinstance(training, dict):
        return []
    learners = training.get("learner_agents", episode.agents)
    candidates = training.get("candidates", {})
    if not isinstance(learners, (list, tuple)) or turn.agent not in learners or not isinstance(candidates, dict):
        return []
    found = candidates.get(str(turn.index), [])
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def turn_rows(
    episode: Episode, labels: dict[tuple[str, int], dict[str, Any]], scale: tuple[float, float] | None
) -> list[TurnRow]:
    rows = []
    for position, turn in enumerate(episode.turns):
        seat = episode.agents.index(turn.agent) if turn.agent in episode.agents else 0
        row = labels.get((episode.id, position), {})
        if row:  # the page lays out dims and normalized as tables: values of another shape are shown as such
            row = {**row, "dims": mapping(row.get("dims"), "dims"), "normalized": mapping(row.get("normalized"), "")}
        if labels:
            label = row.get("label")
            value = label if isinstance(label, (int, float)) and not isinstance(label, bool) else None
        else:
            value = turn.reward if turn.is_speech else None
        rows.append(
            TurnRow(
                position=position,
                seat=seat,
                speaker=turn.character,
                action_type=turn.action_type,
                text=turn.argument,
                speech=turn.is_speech,
                value=value,
                colour=reward_colour(value, scale) if turn.is_speech else "",
                labels=row,
                repairs=list(turn.repairs),
                candidates=_candidates(episode, turn),
            )
        )
    return rows


def episode_context(
    episode: Episode, labels: dict[tuple[str, int], dict[str, Any]], scale: tuple[float, float] | None
) -> dict[str, Any]:
    """What the episode macros need."""
    # The judge's own order (Sotopia-EVAL's), as the scores were recorded; "overall" last.
    dims = list(dict.fromkeys(d for s in episode.judge_scores.values() for d in s if d != "overall"))
    return {
        "ep": episode,
        "rows": turn_rows(episode, labels, scale),
        "value_name": "label" if labels else "reward",
        "scale": scale,
        "dims": dims + ["overall"] if dims else [],
        "names": {a: c.name for a, c in zip(episode.agents, episode.characters)},
        "dimension_info": dimension_info(episode, dims),
    }


def dimension_info(episode: Episode, dims: list[str]) -> dict[str, Any] | None:
    """The set the judge scored (its name, each dimension's range and rubric): the one the episode records, or
    Sotopia-EVAL's when the scores are on its dimensions (episodes judged before sets were recorded); None
    for scores on dimensions no known set describes."""
    found: DimensionSet | None = recorded_dimensions(episode.meta)
    if found is None and dims and set(dims) <= set(SOTOPIA_EVAL.names):
        found = SOTOPIA_EVAL
    if found is None:
        return None
    return {"name": found.name, "ranges": {d.name: d for d in found.dimensions}}
