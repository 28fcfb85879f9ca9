"""The import arrows run one way: sotopia_env <- agents <- rewards <- trainers <- benchmarks (whose cli module is the
`sotopia-env` dispatcher).
The env package names none of the packages above it, and the command line is built from torch-free configs."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from benchmarks.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parents[1]
ABOVE_ENV = ("agents", "rewards", "trainers", "benchmarks", "viewer")


def _fresh(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_importing_every_env_module_loads_no_package_above_it():
    modules = sorted("sotopia_env." + p.stem for p in (ROOT / "sotopia_env").glob("*.py") if p.stem != "__init__")
    loaded = _fresh(
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {ABOVE_ENV!r} or m == 'torch'))"
    )
    assert loaded == "[]"


def test_no_env_module_imports_or_names_a_package_above_it():
    # "agents.cli" or "trainers.grpo:GRPOConfig" (a bare "agents" is the episode field of that name)
    import_string = re.compile(rf"^({'|'.join(ABOVE_ENV)})((\.\w+)+(:\w+)?|:\w+)$")
    offences = []
    for path in sorted((ROOT / "sotopia_env").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and import_string.match(node.value):
                names = [node.value]
            offences += [f"{path.name}:{node.lineno}: {n}" for n in names if n.split(".")[0] in ABOVE_ENV]
    assert offences == []


def test_the_parser_and_every_commands_help_load_no_torch():
    loaded = _fresh(
        "import contextlib, io, sys\n"
        "from benchmarks.cli import COMMANDS, build_parser\n"
        "for argv in [['--help'], *([c, '--help'] for c in COMMANDS)]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        build_parser().parse_args(argv)\n"
        "print([m for m in ('torch', 'transformers', 'vllm') if m in sys.modules])"
    )
    assert loaded == "[]"


def _options(name: str) -> dict[str, str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices[name]
    return {a.dest: a for a in sub._actions if a.dest != "help"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_commands_arguments_are_its_config_fields(name):
    from benchmarks.cli import _load

    config = _load(COMMANDS[name][1])
    assert sorted(_options(name)) == sorted(f.name for f in fields(config))


def test_flags_parse_into_the_commands_config():
    from sotopia_env.cli import config_from_args

    parser = build_parser()
    args = parser.parse_args(["collect", "--both-seats", "--scenarios", "3", "--partner", "scripted", "--top-p", "0.5"])
    cfg = config_from_args(args.config_cls, args)
    assert (cfg.both_seats, cfg.scenarios, cfg.partner, cfg.top_p, cfg.policy) == (True, 3, "scripted", 0.5, "embedded")
    args = parser.parse_args(["benchmark", "embedded", "scripted", "--leaderboard", "", "--no-judge-partner"])
    cfg = config_from_args(args.config_cls, args)
    assert (cfg.policies, cfg.leaderboard, cfg.judge_partner) == (["embedded", "scripted"], "", False)
    args = parser.parse_args(["scenarios", "--file", "a.jsonl", "--file", "b.jsonl"])
    assert config_from_args(args.config_cls, args).file == ["a.jsonl", "b.jsonl"]
    args = parser.parse_args(["scenarios"])
    assert config_from_args(args.config_cls, args).file == []


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["label", "--episodes", "e.jsonl", "--out", "l.jsonl", "--weights", "1,2"], "weights must be 3 numbers"),
        (
            ["label", "--episodes", "e.jsonl", "--out", "l.jsonl", "--method", "vibes"],
            "unknown attribution method 'vibes'",
        ),
        (["collect", "--batch-size", "0"], "CollectConfig.batch_size = 0"),
        (["train-rm", "--heldout-fraction", "1"], "RMTrainConfig.heldout_fraction = 1.0"),
        (["benchmark", "embedded", "--concurrency", "0"], "BenchmarkConfig.concurrency = 0"),
        (["episode", "--characters", "ben_kowalski"], "EpisodeConfig.characters = 'ben_kowalski'"),
        (["pipeline", "--grpo-group-size", "1"], "PipelineConfig.grpo_group_size = 1"),
        (["judge", "--episodes", "e.jsonl", "--out", "j.jsonl", "--batch-size", "0"], "JudgeConfig.batch_size = 0"),
    ],
)
def test_a_bad_config_is_one_error_line_before_any_work(argv, named, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sotopia-env {argv[0]}: error: ") and named in err, err


PACKAGES = ("sotopia_env", "agents", "rewards", "trainers", "benchmarks", "viewer")


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its file (a function-local import is an arrow too)."""
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
        for pkg in PACKAGES
        for p in (ROOT / pkg).glob("*.py")
    }
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_circle_between_modules():
    """Tarjan's strongly connected components of the import graph: every one a single module. (The GRPO loops and
    the benchmark's report once imported each other: grpo <-> online, hard_tasks <-> report.)"""
    graph = import_graph()
    assert {"trainers.online", "trainers.offline"} <= graph["trainers.grpo"]  # the graph sees real arrows
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert circles == []


def test_importing_the_env_and_the_shims_common_layer_loads_no_trainer_framework():
    loaded = _fresh(
        "import sys\n"
        "import sotopia_env, sotopia_social, agents.text_session, trainers.interop\n"
        "print(sorted(m for m in ('openenv', 'verifiers', 'trl', 'skyrl_gym', 'torch') if m in sys.modules))"
    )
    assert loaded == "[]"
