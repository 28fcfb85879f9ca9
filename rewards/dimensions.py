"""The seven Sotopia-EVAL dimensions: names, score ranges, and the rubric text our judge prompt uses.

Ranges are Sotopia-EVAL's; the rubric sentences are written for this project.
"""

from __future__ import annotations

from dataclasses import dataclass


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
BY_NAME = {d.name: d for d in DIMENSIONS}
NAMES = tuple(d.name for d in DIMENSIONS)


def check_scores(scores: dict[str, float]) -> list[str]:
    """Problems with a set of per-dimension scores (missing, unknown, out of range); empty when valid."""
    problems = [f"missing dimension {name!r}" for name in NAMES if name not in scores]
    for name, value in scores.items():
        if name not in BY_NAME:
            problems.append(f"unknown dimension {name!r}")
            continue
        dim = BY_NAME[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{name}: score {value!r} is not a number")
        elif not dim.low <= value <= dim.high:
            problems.append(f"{name}: score {value} outside {dim.low}..{dim.high}")
    return problems


def overall(scores: dict[str, float]) -> float:
    """Sotopia-EVAL's overall score: the mean of the seven dimensions."""
    return sum(scores[n] for n in NAMES) / len(NAMES)
