"""`sotopia-env` command line. Each subcommand imports its package lazily, so `sotopia-env scenarios`
works without the model stack installed."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

Command = Callable[[argparse.Namespace], int]


def _scenarios(args: argparse.Namespace) -> int:
    from .scenarios import hard_pairings, load_scenarios, split

    pool = load_scenarios(*args.file) if args.file else None
    chosen = split(args.split, pool)
    pairings = hard_pairings()
    if args.json:
        for s in chosen:
            print(json.dumps({**s.model_dump(mode="json"), "hard": s.hard, "pairings": pairings.get(s.id, [])}))
    else:
        for s in chosen:
            flag = "hard" if s.hard else "    "
            print(f"{s.id:28s} {flag} {s.category or '-':25s} {s.situation[:70]}")
        print(f"{len(chosen)} scenario(s) in split {args.split!r}", file=sys.stderr)
    return 0


def _import_sotopia(args: argparse.Namespace) -> int:
    from .sotopia_import import import_sotopia, write_library

    result = import_sotopia(args.files)
    paths = write_library(result, args.out)
    print(
        f"imported {len(result.scenarios)} scenarios ({len(result.hard_ids & set(result.scenarios))} hard), "
        f"{len(result.characters)} characters, {sum(map(len, result.pairings.values()))} pairings -> "
        + ", ".join(str(p) for p in paths.values())
    )
    return 0


def _lazy(module: str, func: str) -> Command:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(module).__dict__[func](args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sotopia-env", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("scenarios", help="list scenarios of a split of the library (or of your files)")
    p.add_argument("--split", default="all", help="all, hard, or a category (default: all)")
    p.add_argument("--file", action="append", default=[], help="scenario JSON/JSONL file(s) instead of the library")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=_scenarios)

    p = sub.add_parser("import-sotopia", help="convert Sotopia EnvironmentProfile/AgentProfile dumps to our files")
    p.add_argument("files", nargs="+", help="Sotopia JSON or JSONL dump files")
    p.add_argument("--out", required=True, help="output folder for scenarios.jsonl, characters.jsonl, pairings.json")
    p.set_defaults(run=_import_sotopia)

    for name, module, func, helptext in _EXTERNAL:
        p = sub.add_parser(name, help=helptext)
        _ADDERS[name](p)
        p.set_defaults(run=_lazy(module, func))
    return parser


# Subcommands that live in other packages: (name, module, function, help). Each package adds its own
# arguments through the adder below so the parser is complete without importing torch.
_EXTERNAL: list[tuple[str, str, str, str]] = []
_ADDERS: dict[str, Callable[[argparse.ArgumentParser], None]] = {}


def external(name: str, module: str, func: str, helptext: str) -> Callable:
    def register(adder: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        _EXTERNAL.append((name, module, func, helptext))
        _ADDERS[name] = adder
        return adder

    return register


def add_dataclass_args(parser: argparse.ArgumentParser, module: str, name: str, skip: Sequence[str] = ()) -> None:
    """One --flag per field of a config dataclass (the CLI mirrors the config one to one).

    Reads the dataclass's source for names, types and defaults without importing torch: the module is
    only parsed, not imported, so `sotopia-env --help` stays fast.
    """
    import ast
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"cannot find {module}")
    from pathlib import Path

    source = Path(spec.origin).read_text(encoding="utf-8")
    lines = source.splitlines()
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    for item in cls.body:
        if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
            continue
        field_name, annotation = item.target.id, ast.unparse(item.annotation)
        if field_name in skip:  # the caller adds its own argument for this field
            continue
        default = ast.literal_eval(item.value) if item.value is not None else None
        flag = "--" + field_name.replace("_", "-")
        if annotation == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
            continue
        kind = int if annotation.startswith("int") else float if annotation.startswith("float") else str
        comment = lines[item.lineno - 1].partition("  # ")[2].strip()  # the field's comment is its help
        parser.add_argument(flag, type=kind, default=default, required=item.value is None,
                            help=f"{comment + '; ' if comment else ''}{annotation} (default: {default})")


def dataclass_from_args(cls: type, args: argparse.Namespace):  # noqa: ANN201
    from dataclasses import fields

    return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})


def main(argv: Sequence[str] | None = None) -> int:
    from . import cli_args  # noqa: F401 - registers the other packages' subcommands

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ConnectionError) as exc:  # ConnectionError: a model server that never answered
        print(f"sotopia-env {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
