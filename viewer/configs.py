"""Configs of the viewer's commands (`view`, `play`). Torch-free and web-free, so `sotopia-env view --help`
and the checks below run before FastAPI, a model or a data file loads; each field is a --flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agents.configs import GenerationConfig
from agents.spec import parse_spec
from sotopia_env.cli import config_error

SPLITS = ("", "hard", "other")  # the list's split filter: every scenario, the hard ones, the others


def _check(cfg: object, rules: list[tuple[str, bool, str]]) -> None:
    for name, ok, need in rules:
        if not ok:
            raise config_error(cfg, name, need)


@dataclass
class ViewConfig:
    paths: list[str] = field(
        metadata={
            "help": "episode JSONL files, benchmark folders (report.json + one folder per policy), training runs "
            "(metrics.jsonl) or any folder holding them",
            "positional": True,
        }
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback: only this machine)"})
    port: int = field(default=8765)
    labels: str | None = field(
        default=None,
        metadata={"help": "label file from `sotopia-env label` (its rows colour the utterances instead of rewards)"},
    )
    page_size: int = field(default=50, metadata={"help": "episodes per page of the list"})
    export: str | None = field(
        default=None,
        metadata={"help": "write the chosen episodes to this one self-contained HTML file instead of serving"},
    )
    episode_ids: list[str] = field(
        default_factory=list, metadata={"help": "with --export: these episodes (default: those the filters match)"}
    )
    scenario: str = field(default="", metadata={"help": "with --export: only this scenario id"})
    category: str = field(default="", metadata={"help": "with --export: only this scenario category"})
    split: str = field(default="", metadata={"help": "with --export: hard or other (default: both)"})
    model: str = field(default="", metadata={"help": "with --export: only episodes where a seat has this model spec"})
    end_reason: str = field(default="", metadata={"help": "with --export: leave, silence, turn_limit, ..."})
    min_score: float | None = field(default=None, metadata={"help": "with --export: mean judge overall at least"})
    max_score: float | None = field(default=None, metadata={"help": "with --export: mean judge overall at most"})
    export_limit: int = field(default=100, metadata={"help": "with --export: at most this many episodes"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any file is read."""
        if not self.paths:
            raise ValueError("name at least one episode file, benchmark folder or run folder to view")
        missing = [p for p in self.paths if not Path(p).exists()]
        if missing:
            raise ValueError(f"{', '.join(missing)}: no such file or folder; check the path")
        _check(
            self,
            [
                ("port", 0 < self.port < 65536, "must be a TCP port, 1 to 65535"),
                ("labels", self.labels is None or Path(self.labels).is_file(), "must be an existing label file"),
                ("page_size", self.page_size >= 1, "must be at least 1"),
                ("split", self.split in SPLITS, "must be hard or other (or empty for both)"),
                (
                    "max_score",
                    self.min_score is None or self.max_score is None or self.min_score <= self.max_score,
                    "must not be below --min-score",
                ),
                ("export_limit", self.export_limit >= 1, "must be at least 1"),
                (
                    "episode_ids",
                    self.export is not None or not self.episode_ids,
                    "chooses episodes for --export; add --export FILE.html",
                ),
            ],
        )


@dataclass
class PlayConfig(GenerationConfig):
    partner: str = field(
        default="embedded", metadata={"help": "policy spec of the other seat (embedded, scripted:Hi.|Bye., ...)"}
    )
    seat: int = field(default=0, metadata={"help": "your seat: 0 speaks first, 1 second"})
    scenario: str | None = field(default=None, metadata={"help": "scenario id (default: choose on the start page)"})
    characters: str | None = field(
        default=None, metadata={"help": "two character ids, comma-separated (default: a pairing of the scenario)"}
    )
    max_turns: int = field(default=20)
    seed: int = field(default=0)
    out: str = field(default="runs/play.jsonl", metadata={"help": "episodes file each game is appended to"})
    reward_model: str | None = field(
        default=None, metadata={"help": "reward model folder: score each utterance as it is said"}
    )
    judge: str | None = field(default=None, metadata={"help": "judge policy spec: score the dialogue (Sotopia-EVAL)"})
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback: only this machine)"})
    port: int = field(default=8766)
    max_games: int = field(
        default=50,
        metadata={
            "help": "games the server holds at once; when full, a new game drops the oldest finished game, else "
            "the oldest idle one (saved as unfinished), else it is refused"
        },
    )
    idle_minutes: float = field(
        default=30.0,
        metadata={
            "help": "a game with no move (or judge, or partner retry) this long may be dropped to make room (saved first)"
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any policy loads."""
        pair = [c for c in (self.characters or "").split(",") if c.strip()]
        self._check(
            [
                ("seat", self.seat in (0, 1), "must be 0 (you speak first) or 1"),
                (
                    "partner",
                    parse_spec(self.partner).kind != "human",
                    "is the other seat, played by a policy: a model spec or scripted:LINE|LINE",
                ),
                ("characters", self.characters is None or len(pair) == 2, "must be two character ids, comma-separated"),
                ("max_turns", self.max_turns >= 1, "must be at least 1"),
                (
                    "reward_model",
                    self.reward_model is None or Path(self.reward_model).is_dir(),
                    "must be a reward model folder (e.g. runs/rm/best from `sotopia-env train-rm`)",
                ),
                ("port", 0 < self.port < 65536, "must be a TCP port, 1 to 65535"),
                ("max_games", self.max_games >= 1, "must be at least 1"),
                ("idle_minutes", self.idle_minutes > 0, "must be above 0"),
            ]
        )


@dataclass
class RateConfig:
    episodes: list[str] = field(
        metadata={
            "help": "episode JSONL files or benchmark folders to rate (their judged copies where they exist)",
            "positional": True,
        }
    )
    out: str = field(
        default="runs/ratings.jsonl", metadata={"help": "ratings JSONL each submitted page is appended to"}
    )
    dimensions: str | None = field(
        default=None,
        metadata={"help": "dimension set JSON file; default: the set the episodes were judged on, else Sotopia-EVAL's"},
    )
    pairwise: bool = field(
        default=False,
        metadata={"help": "show two policies' episodes of the same cell side by side; ask which agent did better"},
    )
    seat: int = field(
        default=0, metadata={"help": "the seat under test where an episode's id does not name it (benchmark: |seatN)"}
    )
    seed: int = field(default=0, metadata={"help": "salt of each rater's random order (same id, same order)"})
    sample: int | None = field(
        default=None,
        metadata={"help": "rate only N items drawn at random (seeded by --seed; the same N for every rater)"},
    )
    host: str = field(default="127.0.0.1", metadata={"help": "address to serve on (loopback: only this machine)"})
    port: int = field(default=8767)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any file is read."""
        if not self.episodes:
            raise ValueError("name at least one episode file or benchmark folder to rate")
        missing = [p for p in self.episodes if not Path(p).exists()]
        if missing:
            raise ValueError(f"{', '.join(missing)}: no such file or folder; check the path")
        _check(
            self,
            [
                ("seat", self.seat in (0, 1), "must be 0 or 1"),
                ("sample", self.sample is None or self.sample >= 1, "must be at least 1, or unset for every item"),
                ("port", 0 < self.port < 65536, "must be a TCP port, 1 to 65535"),
                (
                    "dimensions",
                    self.dimensions is None or Path(self.dimensions).is_file(),
                    "must be a dimension set file",
                ),
            ],
        )
