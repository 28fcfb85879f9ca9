"""`sotopia-env`, the command line. Every command is one config dataclass (its fields are the flags) and one
function taking that config. The configs live in torch-free modules, so the parser (and `--help`) is built
without the model stack; a command's own module, which may need it, is imported only when it runs.

It lives here, in the package at the top of the import stack (sotopia_env <- agents <- rewards <- trainers
<- benchmarks), because the dispatcher must name every package; the env package names none of them. The
`benchmark` command itself is `benchmark_command` below.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sotopia_env.cli import add_config_args, config_from_args

from .hard_tasks import BenchmarkConfig, run

# name -> (help, "module:Config", "module:command"). Only the config modules load to build the parser.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "scenarios": (
        "list scenarios of a split of the library (or of your files)",
        "sotopia_env.cli:ScenariosConfig",
        "sotopia_env.cli:scenarios_command",
    ),
    "import-sotopia": (
        "convert Sotopia's profile dumps and episodes (EpisodeLog, released JSONL) to our files",
        "sotopia_env.cli:ImportConfig",
        "sotopia_env.cli:import_sotopia_command",
    ),
    "generate-tasks": (
        "generate new scenarios from social keywords with a model (Sotopia-π step 1), resumable",
        "agents.taskgen:TaskGenConfig",
        "agents.taskgen:generate_tasks_command",
    ),
    "export-sotopia-rl": (
        "write labels and episode states as Sotopia-RL's reward-model and GRPO JSON files",
        "rewards.configs:SotopiaRLExportConfig",
        "rewards.sotopia_rl:export_command",
    ),
    "episode": (
        "play one scenario between two policies, printing the dialogue",
        "agents.configs:EpisodeConfig",
        "agents.cli:episode_command",
    ),
    "serve": (
        "start vLLM's OpenAI-compatible server on a model (default: embedded)",
        "agents.configs:ServeConfig",
        "agents.cli:serve_command",
    ),
    "serve-env": (
        "serve the env as an OpenEnv environment (FastAPI + WebSocket): partner and reward model server-side",
        "trainers.interop:ServeEnvConfig",
        "trainers.openenv_env:serve_env_command",
    ),
    "collect": (
        "run many episodes (policy vs partner, self-play, expert), batched and resumable",
        "agents.configs:CollectConfig",
        "agents.cli:collect_command",
    ),
    "judge": (
        "score episodes with the Sotopia-EVAL judge (cached, resumable)",
        "rewards.configs:JudgeConfig",
        "rewards.cli:judge_command",
    ),
    "label": (
        "episodes -> per-utterance reward data set (judge + attribution), resumable",
        "rewards.configs:LabelConfig",
        "rewards.cli:label_command",
    ),
    "train-rm": (
        "train the reward model on a labelled data set (MSE, LoRA, early stopping)",
        "trainers.rm_config:RMTrainConfig",
        "trainers.cli:train_rm_command",
    ),
    "bc": (
        "behaviour cloning / self-reinforcement (--top-fraction) from episodes",
        "trainers.bc_config:BCConfig",
        "trainers.cli:bc_command",
    ),
    "grpo": (
        "GRPO against a reward model (LoRA; transformers or vLLM rollouts)",
        "trainers.grpo_config:GRPOConfig",
        "trainers.cli:grpo_command",
    ),
    "pipeline": (
        "the main job: collect, judge, label, train RM, BC, GRPO, report",
        "trainers.pipeline:PipelineConfig",
        "trainers.cli:pipeline_command",
    ),
    "benchmark": (
        "benchmark policies on the hard tasks: play, judge, report (resumable)",
        "benchmarks.hard_tasks:BenchmarkConfig",
        "benchmarks.cli:benchmark_command",
    ),
    "rate": (
        "people rate episodes in the browser (models hidden, order shuffled per rater, resumable; --pairwise)",
        "viewer.configs:RateConfig",
        "viewer.cli:rate_command",
    ),
    "agreement": (
        "people's ratings beside the judge's: means, bias, correlations, Krippendorff's alpha (markdown, CSV, PNG)",
        "benchmarks.agreement:AgreementConfig",
        "benchmarks.agreement:agreement_command",
    ),
    "eval-general": (
        "general QA retention: lm-evaluation-harness on the base and the trained adapter, side by side",
        "benchmarks.general_qa:EvalGeneralConfig",
        "benchmarks.general_qa:eval_general_command",
    ),
    "safety": (
        "safety scenarios: harmful engagement, social_rules, secret and toxicity per policy, base vs trained paired",
        "benchmarks.safety:SafetyConfig",
        "benchmarks.safety:safety_command",
    ),
    "view": (
        "browse episodes, benchmark folders and training runs in a local web page (or --export one HTML file)",
        "viewer.configs:ViewConfig",
        "viewer.cli:view_command",
    ),
    "play": (
        "take a seat in a scenario against a policy, in the browser; the episode is recorded",
        "viewer.configs:PlayConfig",
        "viewer.cli:play_command",
    ),
}


def benchmark_command(cfg: BenchmarkConfig) -> int:
    cfg.leaderboard = cfg.leaderboard or None  # --leaderboard '' turns it off
    result = run(cfg)
    print((Path(cfg.out) / "report.md").read_text())
    failures = sum(len(p.failures) for p in result.policies)
    if failures:
        print(f"warning: {failures} episode(s) could not be judged; see 'Judge failures' in the report")
    return 0


def _load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sotopia-env",
        description="Sotopia scenarios as environments: play, judge, label, train and benchmark. "
        "`sotopia-env COMMAND --help` lists a command's flags (one per field of its config).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (helptext, config, command) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        config_cls = _load(config)
        add_config_args(p, config_cls)
        p.set_defaults(config_cls=config_cls, command_target=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args.config_cls, args)  # validated here, before any model loads
        return int(_load(args.command_target)(config) or 0)
    except KeyboardInterrupt:
        print("interrupted; finished work is saved, rerun the same command to resume", file=sys.stderr)
        return 130
    except (
        ValueError,
        FileNotFoundError,
        ConnectionError,
    ) as exc:  # ConnectionError: a model server that never answered
        print(f"sotopia-env {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
