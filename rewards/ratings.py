"""People's ratings of episodes: the data `sotopia-env rate` writes and `sotopia-env agreement` reads.

A ratings file is JSONL, one row per (rater, episode, seat, policy, dimension), appended atomically
(`sotopia_env.jsonio.append_jsonl`) as the rater submits each episode, so a rater can stop and come back:
`rated_by(path, rater)` reads back what that rater has done. `policy` is the model the episode records for the
seat under test: the rating page never shows it, but a benchmark gives every policy's episode of one cell the
same id, so the id alone does not say which episode was rated. A pairwise row compares two policies' episodes of
the same cell on one dimension and records which agent did better (or a tie).

    {"kind": "score", "rater": "r1", "episode": "neg-used-bike|...|seat0", "seat": 0, "policy": "embedded",
     "dimension": "goal", "score": 7, "time": "2026-12-05T09:14:03+00:00", "note": "", "dimensions": "sotopia-eval"}
    {"kind": "pairwise", "rater": "r1", "episode": "A-id", "seat": 0, "policy": "embedded", "other": "B-id",
     "other_policy": "embedded+lora:runs/grpo/adapter", "dimension": "goal", "choice": "other", "time": "...",
     "note": "", "dimensions": "sotopia-eval"}
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import append_jsonl, iter_jsonl

from .dimensions import DimensionSet

KINDS = ("score", "pairwise")
CHOICES = ("episode", "other", "tie")  # pairwise: which of the two did better on the dimension


@dataclass(frozen=True)
class Rating:
    kind: str  # score or pairwise
    rater: str
    episode: str
    seat: int  # the seat under test: agent_{seat} is the agent rated
    dimension: str
    time: str
    policy: str = ""  # the model the episode records for the seat (hidden from the rater)
    score: float | None = None  # kind score: the rater's score, in the dimension's range
    other: str = ""  # kind pairwise: the other policy's episode of the same cell
    other_policy: str = ""  # kind pairwise: the model of that episode's seat under test
    choice: str = ""  # kind pairwise: episode, other or tie
    note: str = ""
    dimensions: str = ""  # the name of the set the dimension belongs to

    @property
    def agent(self) -> str:
        return f"agent_{self.seat}"

    @property
    def item(self) -> str:
        """What was rated: a score row's (episode, seat, policy), a pairwise row's two of them."""
        mine = f"{self.episode}|{self.seat}|{self.policy}"
        return mine if self.kind == "score" else f"{mine}||{self.other}|{self.seat}|{self.other_policy}"


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def check_rating(rating: Rating, dims: DimensionSet) -> list[str]:
    """Problems with one row against the dimension set (empty when valid)."""
    problems = []
    if rating.kind not in KINDS:
        problems.append(f"kind {rating.kind!r} is not one of {', '.join(KINDS)}")
    if not rating.rater.strip():
        problems.append("rater is empty")
    if rating.seat not in (0, 1):
        problems.append(f"seat {rating.seat!r} is not 0 or 1")
    dim = dims.by_name.get(rating.dimension)
    if dim is None:
        problems.append(f"dimension {rating.dimension!r} is not in the set {dims.name!r}")
    elif rating.kind == "score" and (rating.score is None or not dim.low <= rating.score <= dim.high):
        problems.append(f"{rating.dimension}: score {rating.score!r} outside {dim.low}..{dim.high}")
    if rating.kind == "pairwise" and (rating.choice not in CHOICES or not rating.other):
        problems.append(f"a pairwise row needs 'other' and a choice of {', '.join(CHOICES)}, not {rating.choice!r}")
    return problems


def append_ratings(path: str | Path, ratings: Iterable[Rating]) -> None:
    for rating in ratings:
        append_jsonl(path, {k: v for k, v in asdict(rating).items() if v not in ("", None) or k == "note"})


def read_ratings(path: str | Path, dims: DimensionSet | None = None) -> list[Rating]:
    """Every row of a ratings file; with `dims`, a row that does not fit the set is a ValueError naming the
    file, the line and the fix. A later row for the same (kind, rater, episode, other, seat, dimension) replaces
    an earlier one: a rater who changed their mind."""
    latest: dict[tuple[Any, ...], Rating] = {}
    for line, raw in enumerate(iter_jsonl(path), 1):
        try:
            rating = Rating(**raw)
        except TypeError as exc:
            raise ValueError(f"{path}: line {line}: not a rating row ({exc}); see rewards/ratings.py") from None
        problems = check_rating(rating, dims) if dims is not None else []
        if problems:
            raise ValueError(
                f"{path}: line {line}: {'; '.join(problems)}; rate with the dimension set the file was made with "
                "(--dimensions)"
            )
        latest[(rating.kind, rating.rater, rating.item, rating.dimension)] = rating
    return list(latest.values())


def rated_by(path: str | Path, rater: str) -> set[str]:
    """The items (`Rating.item`) this rater has submitted: what a resumed session skips."""
    return {r.item for r in (read_ratings(path) if Path(path).exists() else []) if r.rater == rater}


Item = tuple[str, int, str]  # episode id, seat under test, the policy in that seat


def people_scores(ratings: Sequence[Rating], dimension: str) -> dict[Item, list[float]]:
    """(episode, seat, policy) -> the raters' scores on one dimension (one score per rater)."""
    items: dict[Item, list[float]] = {}
    for r in ratings:
        if r.kind == "score" and r.dimension == dimension and r.score is not None:
            items.setdefault((r.episode, r.seat, r.policy), []).append(float(r.score))
    return items
