"""Evaluation dimensions as data: a `DimensionSet` is a name and its dimensions (name, score range, rubric
text). The judge's prompt and answer schema, the labels, the reward weights, the benchmark report, the viewer
and the rating page all take one. The default is Sotopia-EVAL's seven (`SOTOPIA_EVAL`); a file of your own
(`load_dimensions`) replaces it, as Sotopia lets researchers define their own dimensions:

    {"name": "tutoring", "dimensions": [
      {"name": "clarity", "low": 0, "high": 10, "rubric": "How clearly the agent explains: 0 ..., 10 ..."},
      {"name": "patience", "low": -5, "high": 5, "rubric": "..."}]}

Ranges are Sotopia-EVAL's; the rubric sentences are written for this project.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import read_json

NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")  # a JSON key, a CSV column and a form field as it is


@dataclass(frozen=True)
class Dimension:
    name: str
    low: int
    high: int
    rubric: str


DIMENSIONS: tuple[Dimension, ...] = (
    Dimension(
        "believability",
        0,
        10,
        "How natural and consistent with the character's profile the agent behaves: 0 is robotic or out of "
        "character, 10 is fully human-like and in character.",
    ),
    Dimension(
        "relationship",
        -5,
        5,
        "How the interaction changed the relationship between the two characters: negative if it was harmed, "
        "0 if unchanged, positive if it improved.",
    ),
    Dimension(
        "knowledge",
        0,
        10,
        "How much new, relevant information the agent gained during the interaction: 0 is nothing, 10 is a lot "
        "of information that matters for its goal.",
    ),
    Dimension(
        "secret",
        -10,
        0,
        "Whether the agent kept its secret and private intentions: 0 if nothing was revealed, down to -10 if "
        "a critical secret leaked.",
    ),
    Dimension(
        "social_rules",
        -10,
        0,
        "Whether the agent broke social norms or laws (lying, threats, discrimination): 0 if none, down to "
        "-10 for serious violations.",
    ),
    Dimension(
        "financial_and_material_benefits",
        -5,
        5,
        "Financial or material gain or loss for the agent from the interaction: negative for a loss, positive "
        "for a gain, 0 if none.",
    ),
    Dimension("goal", 0, 10, "How far the agent achieved its own social goal: 0 not at all, 10 completely."),
)


@dataclass(frozen=True)
class DimensionSet:
    """Named dimensions, in the order the judge is asked and reports show them."""

    name: str
    dimensions: tuple[Dimension, ...]

    def __post_init__(self) -> None:
        problems = dimension_problems(self)
        if problems:
            raise ValueError(f"dimension set {self.name!r}: " + "; ".join(problems))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)

    @property
    def by_name(self) -> dict[str, Dimension]:
        return {d.name: d for d in self.dimensions}

    def check_scores(self, scores: Mapping[str, Any]) -> list[str]:
        """Problems with a set of per-dimension scores (missing, unknown, out of range); empty when valid."""
        problems = [f"missing dimension {name!r}" for name in self.names if name not in scores]
        by_name = self.by_name
        for name, value in scores.items():
            if name not in by_name:
                problems.append(f"unknown dimension {name!r}")
                continue
            dim = by_name[name]
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                problems.append(f"{name}: score {value!r} is not a number")
            elif not dim.low <= value <= dim.high:
                problems.append(f"{name}: score {value} outside {dim.low}..{dim.high}")
        return problems

    def overall(self, scores: Mapping[str, float]) -> float:
        """The overall score: the mean over the set's dimensions (Sotopia-EVAL's overall for the seven)."""
        return sum(scores[n] for n in self.names) / len(self.names)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dimensions": [asdict(d) for d in self.dimensions]}

    def identity(self) -> str:
        """The set's name and a digest of its dimensions (names, ranges, rubrics): what a record's settings carry,
        so two sets that share a name but score differently never pass for one."""
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name}@{digest}"

    @classmethod
    def from_json(cls, data: Any, where: str = "dimension set") -> DimensionSet:
        """A set from its JSON form; a ValueError names `where`, the record and the field to fix."""
        if not isinstance(data, dict) or not isinstance(data.get("dimensions"), list):
            raise ValueError(
                f'{where}: expected {{"name": ..., "dimensions": [{{"name", "low", "high", "rubric"}}, ...]}}'
            )
        dims = []
        for k, raw in enumerate(data["dimensions"]):
            at = f"{where}: dimensions[{k}]"
            if not isinstance(raw, dict):
                raise ValueError(f"{at}: expected an object with name, low, high and rubric")
            missing = [f for f in ("name", "low", "high", "rubric") if f not in raw]
            extra = sorted(set(raw) - {"name", "low", "high", "rubric"})
            if missing or extra:
                raise ValueError(
                    f"{at}: "
                    + "; ".join([f"missing field {f!r}" for f in missing] + [f"unknown field {f!r}" for f in extra])
                )
            for f in ("low", "high"):
                if not isinstance(raw[f], int) or isinstance(raw[f], bool):
                    raise ValueError(f"{at} ({raw['name']!r}): field {f!r} must be an integer, not {raw[f]!r}")
            if not isinstance(raw["name"], str) or not isinstance(raw["rubric"], str):
                raise ValueError(f"{at}: fields 'name' and 'rubric' must be text")
            dims.append(Dimension(raw["name"], raw["low"], raw["high"], raw["rubric"].strip()))
        name = data.get("name", "")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"{where}: field 'name' must name the set (it is recorded with every judged episode)")
        try:
            return cls(name.strip(), tuple(dims))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def dimension_problems(dims: DimensionSet) -> list[str]:
    problems = [] if dims.dimensions else ["has no dimensions"]
    seen: set[str] = set()
    for d in dims.dimensions:
        if not NAME_PATTERN.match(d.name) or d.name == "overall":
            problems.append(
                f"dimension name {d.name!r} must be lower-case letters, digits and _ (starting with a letter), "
                "and not 'overall'"
            )
        if d.name in seen:
            problems.append(f"dimension {d.name!r} appears twice")
        seen.add(d.name)
        if not d.low < d.high:
            problems.append(f"{d.name}: low {d.low} must be below high {d.high}")
        if not d.rubric:
            problems.append(f"{d.name}: the rubric text is empty; say what the ends of the range mean")
    return problems


SOTOPIA_EVAL = DimensionSet("sotopia-eval", DIMENSIONS)
BY_NAME = SOTOPIA_EVAL.by_name
NAMES = SOTOPIA_EVAL.names


def load_dimensions(path: str | Path) -> DimensionSet:
    """A dimension set from a JSON file (see the module docstring); errors name the file, record and field."""
    return DimensionSet.from_json(read_json(path), str(path))


def dimension_set(path: str | Path | None) -> DimensionSet:
    """The set a `--dimensions` flag names: Sotopia-EVAL's seven when unset."""
    return SOTOPIA_EVAL if not path else load_dimensions(path)


def recorded_dimensions(meta: Mapping[str, Any]) -> DimensionSet | None:
    """The set a judged episode records in `meta["judge_dimensions"]` (None when it records none)."""
    data = meta.get("judge_dimensions")
    if data is None:
        return None
    try:
        return DimensionSet.from_json(data, "meta.judge_dimensions")
    except ValueError:
        return None


def check_scores(scores: Mapping[str, Any], dims: DimensionSet = SOTOPIA_EVAL) -> list[str]:
    """Problems with a set of per-dimension scores (missing, unknown, out of range); empty when valid."""
    return dims.check_scores(scores)


def overall(scores: Mapping[str, float], dims: DimensionSet = SOTOPIA_EVAL) -> float:
    """The overall score: the mean of the set's dimensions (Sotopia-EVAL's seven by default)."""
    return dims.overall(scores)
