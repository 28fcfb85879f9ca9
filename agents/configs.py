"""Configs of the agents package's commands (`episode`, `collect`, `serve`). Torch-free, so
`sotopia-env CMD --help` and the checks below run before any model loads; each field is a --flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sotopia_env.cli import config_error

from .engine import SamplingParams

LIBRARY_FILES = ("scenarios.jsonl", "characters.jsonl")  # and, optionally, pairings.json


def library_problem(folder: str | Path) -> str:
    """What keeps `folder` from being a scenario library (generate-tasks and import-sotopia write one), or ""."""
    root = Path(folder)
    if not root.is_dir():
        return "no such folder"
    missing = [name for name in LIBRARY_FILES if not (root / name).is_file()]
    return f"it has no {' and no '.join(missing)}" if missing else ""


def library_rule(library: str | Path | None) -> tuple[str, bool, str]:
    """The config check of a `library` field: (field name, whether it is fine, what it must be)."""
    problem = library_problem(library) if library is not None else ""
    need = (
        "must be a library folder holding scenarios.jsonl and characters.jsonl, as generate-tasks "
        f"and import-sotopia write; {problem}"
    )
    return "library", not problem, need


@dataclass
class GenerationConfig:
    """Sampling of the policies' utterances, shared by the commands that play episodes."""

    max_new_tokens: int = field(default=64, metadata={"help": "tokens per utterance"})
    temperature: float = field(default=0.7)
    top_p: float = field(default=0.95)

    def sampling(self, seed: int | None = None) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed
        )

    def _check(self, rules: list[tuple[str, bool, str]]) -> None:
        rules = [
            *rules,
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("temperature", self.temperature >= 0, "must be 0 (greedy) or more"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)


@dataclass
class EpisodeConfig(GenerationConfig):
    scenario: str | None = field(
        default=None, metadata={"help": "scenario id (default: drawn from the library with --seed)"}
    )
    characters: str | None = field(
        default=None, metadata={"help": "two character ids, comma-separated (default: a pairing)"}
    )
    agent0: str = field(default="embedded", metadata={"help": "policy spec for the first seat"})
    agent1: str = field(default="embedded", metadata={"help": "policy spec for the second seat"})
    max_turns: int = field(default=20)
    seed: int = field(default=0)
    out: str = field(default="runs/episodes.jsonl", metadata={"help": "episodes file to append to"})

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any policy loads."""
        pair = [c for c in (self.characters or "").split(",") if c.strip()]
        self._check(
            [
                ("max_turns", self.max_turns >= 1, "must be at least 1"),
                ("characters", self.characters is None or len(pair) == 2, "must be two character ids, comma-separated"),
            ]
        )


@dataclass
class CollectConfig(GenerationConfig):
    policy: str = field(default="embedded", metadata={"help": "policy spec for the first seat"})
    partner: str | None = field(
        default=None, metadata={"help": "policy spec for the second seat (default: same as --policy: self-play)"}
    )
    library: str | None = field(
        default=None,
        metadata={
            "help": "a library folder (scenarios.jsonl, characters.jsonl, optional pairings.json) from "
            "generate-tasks or import-sotopia, played instead of the shipped library"
        },
    )
    split: str = field(default="all", metadata={"help": "scenario split of the library: all, hard or a category"})
    scenarios: int | None = field(default=None, metadata={"help": "use only the first N scenarios of the split"})
    pairs_per_scenario: int = field(default=1)
    episodes_per_pair: int = field(default=1)
    both_seats: bool = field(default=False, metadata={"help": "also play each pairing with the seats swapped"})
    max_turns: int = field(default=20)
    batch_size: int = field(
        default=8, metadata={"help": "episodes played together (one generate call per seat per round)"}
    )
    seed: int = field(default=0)
    out: str = field(default="runs/episodes.jsonl")

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any policy loads."""
        self._check(
            [
                library_rule(self.library),
                (
                    "scenarios",
                    self.scenarios is None or self.scenarios >= 1,
                    "must be at least 1, or unset for the whole split",
                ),
                ("pairs_per_scenario", self.pairs_per_scenario >= 1, "must be at least 1"),
                ("episodes_per_pair", self.episodes_per_pair >= 1, "must be at least 1"),
                ("max_turns", self.max_turns >= 1, "must be at least 1"),
                ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ]
        )


@dataclass
class ServeConfig:
    model: str = field(default="embedded", metadata={"help": "model path or id (the embedded model by default)"})
    host: str = field(default="127.0.0.1")
    port: int = field(default=8000)
    served_name: str | None = field(
        default=None, metadata={"help": "model name clients use (default: smollm2 for the embedded model)"}
    )
    api_key_env: str = field(
        default="VLLM_API_KEY",
        metadata={
            "help": "environment variable holding the API key the server requires of every /v1 request (vLLM's "
            "--api-key, passed in the environment so it is not in the process list; clients send it from "
            "$OPENAI_API_KEY); unset or empty: no key"
        },
    )

    def validate(self) -> None:
        if not 0 < self.port < 65536:
            raise config_error(self, "port", "must be a TCP port, 1 to 65535")
