"""What the trainer shims share (OpenEnv, verifiers, TRL's `environment_factory`, SkyRL-gym): one config naming the
partner, the reward model and the scenario pool, the parts it loads (once per process, however many envs a
framework makes), and the episode starts a data set is made of. Torch-free to import: the partner's engine and the
reward model load in `load_parts`.

    cfg = SessionConfig(partner="embedded", reward="runs/rm/best", max_turns=8)
    session = new_session(cfg)               # an agents.text_session.TextSession on the shared parts
    starts = episode_starts(cfg, count=64)   # EpisodeStarts: scenario, seed (draws the pairing), seat
"""

from __future__ import annotations

import functools
import importlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.configs import library_rule
from agents.text_session import AGGREGATES, TextSession
from sotopia_env import EpisodeStart, split
from sotopia_env.cli import config_error


@dataclass(frozen=True)
class SessionConfig:
    """The partner, the reward and the scenario pool of a session; every field is a `serve-env` flag."""

    partner: str = field(
        default="scripted",
        metadata={"help": "the partner's policy spec (agents.spec): scripted[:lines], embedded, openai:MODEL@URL, ..."},
    )
    reward: str | None = field(
        default=None,
        metadata={
            "help": "the env's reward: a reward model folder (train-rm's output), or module:function naming a reward "
            "function of a RewardContext (e.g. benchmarks.preference:address_reward); unset: every reward is 0"
        },
    )
    library: str | None = field(
        default=None, metadata={"help": "a library folder (scenarios, characters, pairings) instead of the shipped one"}
    )
    split: str = field(default="all", metadata={"help": "the scenario split starts are drawn from"})
    max_turns: int = field(default=20, metadata={"help": "turns per episode, both seats counted"})
    max_new_tokens: int = field(default=64, metadata={"help": "an LLM partner's tokens per utterance"})
    temperature: float = field(default=0.7, metadata={"help": "an LLM partner's sampling temperature"})
    top_p: float = field(default=0.95)
    seed: int = field(default=0, metadata={"help": "an LLM partner's run seed: each reply is seeded per episode"})
    reward_aggregate: str = field(
        default="sum", metadata={"help": "one reward per episode, where a contract wants one: sum, mean or discounted"}
    )
    gamma: float = field(default=1.0, metadata={"help": "the discount of reward_aggregate=discounted"})

    def validate(self) -> None:
        rules = [
            library_rule(self.library),
            ("max_turns", self.max_turns >= 1, "must be at least 1"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("temperature", self.temperature >= 0, "must be 0 (greedy) or more"),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]"),
            ("reward_aggregate", self.reward_aggregate in AGGREGATES, f"must be one of {', '.join(AGGREGATES)}"),
            ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)

    @classmethod
    def from_mapping(cls, data: Any) -> SessionConfig:
        """A config from a framework's mapping (SkyRL's `env_config`, verifiers' env args); unknown keys are an
        error naming the known ones."""
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown session setting(s) {unknown}; the settings are {sorted(known)}")
        return cls(**data)


@dataclass
class SessionParts:
    """What every session of a config shares: the partner policy, the env's reward function, the scenario pool."""

    partner: Any
    reward_fn: Any
    scenarios: dict
    characters: dict
    pairings: Any

    def env_kwargs(self, cfg: SessionConfig) -> dict[str, Any]:
        return {
            "scenarios": self.scenarios,
            "characters": self.characters,
            "pairings": self.pairings,
            "max_turns": cfg.max_turns,
        }


@functools.cache
def load_parts(cfg: SessionConfig) -> SessionParts:
    """The partner, reward function and pool of `cfg`, loaded once per process and config (frameworks make an env
    per rollout; they all share these)."""
    from agents.engine import SamplingParams
    from agents.runner import load_pool
    from agents.spec import make_policies

    cfg.validate()
    scenarios, characters, pairings = load_pool(cfg.library)
    params = SamplingParams(
        max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
    )
    (partner,) = make_policies([cfg.partner], params)
    return SessionParts(partner, load_reward(cfg.reward), scenarios, characters, pairings)


def load_reward(spec: str | None) -> Any:
    """The env's reward function `spec` names: a reward model folder, or "module:function"; None for no reward."""
    if not spec:
        return None
    if Path(spec).is_dir():
        from rewards.reward_model import RewardModel

        return RewardModel.load(spec).as_env_reward()
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise ValueError(
            f"reward {spec!r} is neither a reward model folder nor module:function (e.g. benchmarks.preference:address_reward)"
        )
    fn = getattr(importlib.import_module(module), name, None)
    if not callable(fn):
        raise ValueError(f"reward {spec!r}: {module} has no function {name!r}")
    return fn


def new_session(cfg: SessionConfig, parts: SessionParts | None = None) -> TextSession:
    """A text session on the shared parts of `cfg` (or on `parts`, e.g. batched forms of them)."""
    parts = parts or load_parts(cfg)
    return TextSession(parts.partner, parts.reward_fn, **parts.env_kwargs(cfg))


def episode_starts(cfg: SessionConfig, count: int, seed: int = 0, seat: str = "alternate") -> list[EpisodeStart]:
    """`count` starts drawn from `cfg`'s split with `seed`: a scenario, an env seed (which draws the character
    pairing) and the learner's seat ("0", "1" or "alternate", starting with 0)."""
    if str(seat) not in ("0", "1", "alternate"):
        raise ValueError(f"seat must be '0', '1' or 'alternate', not {seat!r}")
    from agents.runner import load_pool

    ids = sorted(s.id for s in split(cfg.split, load_pool(cfg.library)[0]))
    if not ids:
        raise ValueError(f"split {cfg.split!r} holds no scenarios")
    rng = random.Random(seed)
    return [
        EpisodeStart(rng.choice(ids), rng.randrange(1 << 30), i % 2 if seat == "alternate" else int(seat))
        for i in range(count)
    ]


@dataclass(frozen=True)
class ServeEnvConfig(SessionConfig):
    """`sotopia-env serve-env`: the env as an OpenEnv server (trainers/openenv_env.py), one session per episode."""

    host: str = field(default="127.0.0.1")
    port: int = field(default=8000)
    max_concurrent_envs: int = field(
        default=64, metadata={"help": "sessions (WebSocket connections) served at once, each its own episode"}
    )
    batch_wait_ms: float = field(
        default=5.0,
        metadata={"help": "how long an LLM partner's or a reward model's batch waits for other sessions' requests"},
    )

    def validate(self) -> None:
        super().validate()
        rules = [
            ("port", 0 < self.port < 65536, "must be a TCP port, 1 to 65535"),
            ("max_concurrent_envs", self.max_concurrent_envs >= 1, "must be at least 1"),
            ("batch_wait_ms", self.batch_wait_ms >= 0, "must be 0 or more"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)

    def session(self) -> SessionConfig:
        """The session part of this config (what `load_parts` caches by)."""
        return SessionConfig(**{name: getattr(self, name) for name in SessionConfig.__dataclass_fields__})
