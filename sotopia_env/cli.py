"""The env package's commands (`scenarios`, `import-sotopia`) and the config-to-flags machinery every
`sotopia-env` command uses: one config dataclass per command, one --flag per field, help from the
field's metadata. The dispatcher that also reaches the packages built on this one is `benchmarks.cli`."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def config_error(cfg: Any, name: str, need: str) -> ValueError:
    """The error for a bad config field: which config, field and value, what it needs, and the flag to fix."""
    flag = "--" + name.replace("_", "-")
    return ValueError(f"{type(cfg).__name__}.{name} = {getattr(cfg, name)!r}: {need} (set {flag})")


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """(the element type argparse converts to, whether the field is a list) for a field's type hint;
    Optional[X] is X, because an unset flag keeps the field's default (None)."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if typing.get_origin(hint) is list:
        return (args[0] if args else str), True
    return hint, False


def add_config_args(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per field of the dataclass `cls`: --field-name (a bool as --x/--no-x, a list as a
    repeatable flag), or a positional argument when the field's metadata says {"positional": True}.
    A field without a default is a required flag."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind, is_list = _flag_type(hints[f.name])
        if kind not in (str, int, float, bool):
            raise TypeError(
                f"{cls.__name__}.{f.name}: a {hints[f.name]} field has no command-line form; use str, int, "
                "float, bool, a list of one of them, or an Optional of one"
            )
        default = (
            f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None
        )
        required = f.default is MISSING and f.default_factory is MISSING
        text = f.metadata.get("help", "")
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="+" if is_list else None, type=kind, help=text)
            continue
        flag = "--" + f.name.replace("_", "-")
        shown = f"{text}{'; ' if text else ''}default: {default}" if not required else text
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=default, help=shown)
        elif is_list:
            parser.add_argument(
                flag, dest=f.name, action="append", type=kind, default=None, help=shown + " (repeatable)"
            )
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=default, required=required, help=shown)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """The config a parsed command line describes; a repeatable flag never given keeps the field's default,
    and the config's validate() (where it has one) runs before any work starts."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    config = cls(**values)
    if hasattr(config, "validate"):
        config.validate()
    return config


@dataclass
class ScenariosConfig:
    split: str = field(default="all", metadata={"help": "all, hard, or a category"})
    file: list[str] = field(default_factory=list, metadata={"help": "scenario JSON/JSONL file instead of the library"})
    json: bool = field(default=False, metadata={"help": "one JSON object per line"})


@dataclass
class ImportConfig:
    files: list[str] = field(
        metadata={"help": "Sotopia JSON/JSONL files: profiles, combos, EpisodeLogs, episodes", "positional": True}
    )
    out: str = field(
        metadata={"help": "output folder for scenarios.jsonl, characters.jsonl, pairings.json and episodes.jsonl"}
    )
    library: str | None = field(
        default=None,
        metadata={"help": "a folder an earlier import-sotopia wrote: its profiles complete the imported episodes"},
    )


def scenarios_command(cfg: ScenariosConfig) -> int:
    from .scenarios import library_pairings, load_scenarios, split

    pool = load_scenarios(*cfg.file) if cfg.file else None
    chosen = split(cfg.split, pool)
    pairings = library_pairings()
    if cfg.json:
        for s in chosen:
            print(json.dumps({**s.model_dump(mode="json"), "hard": s.hard, "pairings": pairings.get(s.id, [])}))
    else:
        for s in chosen:
            flag = "hard" if s.hard else "    "
            print(f"{s.id:28s} {flag} {s.category or '-':25s} {s.situation[:70]}")
        print(f"{len(chosen)} scenario(s) in split {cfg.split!r}", file=sys.stderr)
    return 0


def import_sotopia_command(cfg: ImportConfig) -> int:
    from pathlib import Path

    from .episode import write_jsonl_atomic
    from .sotopia_episodes import import_episodes, is_episode_file, load_library
    from .sotopia_import import SotopiaImport, import_sotopia, write_library

    episode_files = [f for f in cfg.files if Path(f).exists() and is_episode_file(f)]
    profile_files = [f for f in cfg.files if f not in episode_files]
    result = import_sotopia(profile_files) if profile_files else SotopiaImport()
    if profile_files:  # only episodes given: leave a library already in OUT as it is
        paths = write_library(result, cfg.out)
        print(
            f"imported {len(result.scenarios)} scenarios ({len(result.hard_ids & set(result.scenarios))} hard), "
            f"{len(result.characters)} characters, {sum(map(len, result.pairings.values()))} pairings -> "
            + ", ".join(str(p) for p in paths.values())
        )
    if episode_files:
        profiles = load_library(cfg.library, result) if cfg.library else result
        imported = import_episodes(episode_files, profiles)
        out = Path(cfg.out) / "episodes.jsonl"
        write_jsonl_atomic(out, imported.episodes)
        rebuilt = sum(bool(e.meta["sotopia"]["rebuilt"]) for e in imported.episodes)
        print(
            f"imported {len(imported.episodes)} episodes ({rebuilt} with scenario or characters rebuilt from the "
            f"episode's own text) -> {out}"
        )
        for problem in imported.problems:
            print(problem, file=sys.stderr)
    return 0
