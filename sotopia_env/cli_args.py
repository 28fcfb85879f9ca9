"""Arguments of the subcommands whose code lives outside `sotopia_env` (agents, rewards, trainers,
benchmarks). Kept here so `sotopia-env --help` needs no torch; each mirrors its config dataclass."""

from __future__ import annotations

import argparse

from .cli import add_dataclass_args, external


def _generation(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per utterance (default 64)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)


@external("episode", "agents.cli", "episode_command", "play one scenario between two policies, printing the dialogue")
def _episode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", default=None, help="scenario id (default: drawn from the library with --seed)")
    p.add_argument("--characters", default=None, help="two character ids, comma-separated (default: a pairing)")
    p.add_argument("--agent0", default="embedded", help="policy spec for the first seat (default: embedded)")
    p.add_argument("--agent1", default="embedded", help="policy spec for the second seat (default: embedded)")
    p.add_argument("--max-turns", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/episodes.jsonl", help="episodes file to append to")
    _generation(p)


@external("serve", "agents.cli", "serve_command", "start vLLM's OpenAI-compatible server on a model (default: embedded)")
def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded", help="model path or id (default: the embedded model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-name", default=None, help="model name clients use (default: smollm2 for the embedded model)")


@external("label", "rewards.cli", "label_command", "episodes -> per-utterance reward data set (judge + attribution), resumable")
def _label(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", required=True, help="episodes JSONL")
    p.add_argument("--out", required=True, help="reward data set JSONL (also writes OUT.raw.jsonl and OUT.stats.json)")
    p.add_argument("--judge", default="embedded", help="policy-style spec of the judge model (default: embedded; use a strong model)")
    p.add_argument("--method", default="direct", help="direct, scaled, singular, uniform or discounting")
    p.add_argument("--dims", default="goal,relationship,knowledge", help="dimensions to aggregate")
    p.add_argument("--weights", default=None, help="comma-separated weights, one per dimension (default: equal)")
    p.add_argument("--gamma", type=float, default=0.9, help="discount for the discounting method")
    p.add_argument("--batch-size", type=int, default=8)


@external("train-rm", "trainers.cli", "train_rm_command", "train the reward model on a labelled data set (MSE, LoRA, early stopping)")
def _train_rm(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, "trainers.reward_model", "RMTrainConfig")


@external("collect", "trainers.cli", "collect_command", "run many episodes (policy vs partner, self-play, expert), batched and resumable")
def _collect(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default="embedded", help="policy spec for the first seat (default: embedded)")
    p.add_argument("--partner", default=None, help="policy spec for the second seat (default: same as --policy: self-play)")
    p.add_argument("--split", default="all", help="scenario split (default: all)")
    p.add_argument("--scenarios", type=int, default=None, help="use only the first N scenarios of the split")
    p.add_argument("--pairs-per-scenario", type=int, default=1)
    p.add_argument("--episodes-per-pair", type=int, default=1)
    p.add_argument("--both-seats", action="store_true", help="also play each pairing with the seats swapped")
    p.add_argument("--max-turns", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=8, help="episodes played together (one generate call per seat per round)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/episodes.jsonl")
    _generation(p)


@external("judge", "trainers.cli", "judge_command", "score episodes with the Sotopia-EVAL judge (cached, resumable)")
def _judge(p: argparse.ArgumentParser) -> None:
    p.add_argument("--episodes", required=True)
    p.add_argument("--out", required=True, help="judged episodes JSONL")
    p.add_argument("--judge", default="vllm:embedded", help="judge model spec (default: vllm:embedded; use a strong model)")
    p.add_argument("--batch-size", type=int, default=16)


@external("bc", "trainers.cli", "bc_command", "behaviour cloning / self-reinforcement (--top-fraction) from episodes")
def _bc(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, "trainers.bc", "BCConfig")


@external("grpo", "trainers.cli", "grpo_command", "GRPO against a reward model (LoRA; transformers or vLLM rollouts)")
def _grpo(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, "trainers.grpo", "GRPOConfig")


@external("pipeline", "trainers.cli", "pipeline_command", "the main job: collect, judge, label, train RM, BC, GRPO, report")
def _pipeline(p: argparse.ArgumentParser) -> None:
    add_dataclass_args(p, "trainers.pipeline", "PipelineConfig")


@external("benchmark", "benchmarks.cli", "benchmark_command", "benchmark policies on the hard tasks: play, judge, report (resumable)")
def _benchmark(p: argparse.ArgumentParser) -> None:
    p.add_argument("policies", nargs="+", help="policy specs to benchmark; the first is the baseline of the paired comparisons")
    add_dataclass_args(p, "benchmarks.hard_tasks", "BenchmarkConfig", skip=("policies",))
