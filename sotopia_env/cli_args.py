"""Arguments of the subcommands whose code lives outside `sotopia_env` (agents, rewards, trainers,
benchmarks). Kept here so `sotopia-env --help` needs no torch; each mirrors its config dataclass."""

from __future__ import annotations
