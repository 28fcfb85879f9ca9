"""Where a GRPO step's time goes, in the env (`turn` and `episode` credit) and offline, at the same number of
trained utterances per step; and (`--learning`) how far each mode raises a learned reward after the same
budget. A benchmark, not a test: it measures and prints; nothing passes or fails.

    python -m benchmarks.online_grpo [--steps 3] [--partner scripted] [--json benchmarks/results/online_grpo.json]
    python -m benchmarks.online_grpo --learning [--seeds 0,1,2] [--steps 8] [--json ...]

Each mode trains `--steps` steps on the embedded model from a fresh LoRA, rewarded by a reward model (an
untrained one by default: its forward pass costs the same as a trained one's). Per mode, the mean over steps
after the first (the first pays for warm-up) of: learner generation, partner generation, the env's own work
(stepping, observing, recording: everything but model forward passes), the reward model, the update and the
adapter sync, and the env's share of the step. Sizes (max_turns 4, so each learner plays 2 turns an episode):
turn B=2 episodes x 2 learner turns x G=2 candidates, episode B=2 starts x G=2 episodes x 2 turns, offline B=4
states x G=2: 8 trained utterances per step each (`--group-size` sets G for all three).

`--modes episode/plain,episode` sets the update's two ways side by side: a mode with `/plain` runs every trained
utterance's prompt through the model on its own (shared_prompt=False); without it, replies to the same prompt share
one pass (turn and offline: a state's G candidates; episode: the G episodes' first learner turn).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import write_json_atomic

LEARNING_DOC = """
Learning (`--learning`): the reward model of a known preference (benchmarks.preference: an utterance that addresses
the partner scores 10, else 0), trained on the embedded policy's own samples (the committed model unless
`--reward-model` or `--retrain-rm`), rewards each mode's run from a fresh
LoRA with the settings of the learning tests (benchmarks.preference.LEARNING; brief-library scenarios, a scripted
partner, max_turns 4) at 16 trained utterances per step: offline 4 states x G=4, turn 2 starts x 2 learner turns x
G=4 candidates, episode 2 starts x G=4 episodes x 2 learner turns. Per mode and seed: the held-out reward before
and after (offline: 8 held-out states x 4 samples; turn and episode: 8 held-out on-policy episodes), its gain, the
largest KL; per mode the mean gain and its spread (min..max, sample standard deviation) over the seeds.
"""
__doc__ += LEARNING_DOC

PARTS = ("learner_generate", "partner_generate", "env", "reward", "update", "sync")


def run_mode(
    mode: str, rm: Path, out: Path, steps: int, partner: str, max_new_tokens: int, group_size: int = 2
) -> dict[str, Any]:
    """One mode's time split; a mode named "<mode>/plain" runs every utterance's prompt on its own in the update
    (shared_prompt=False), the side-by-side for the shared-prompt forward pass."""
    from trainers.grpo import GRPOConfig, train_grpo

    name = mode
    mode, _, variant = mode.partition("/")
    if variant not in ("", "plain"):
        raise ValueError(f"unknown mode variant {variant!r} in {name!r}: the one variant is '/plain'")
    common = dict(
        reward_model=str(rm),
        out=str(out / name.replace("/", "-")),
        steps=steps,
        group_size=group_size,
        shared_prompt=variant != "plain",
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=384,
        lora_layers=4,
        heldout_states=1,
        eval_samples=1,
        save_every=steps,
        tensorboard=False,
    )
    if mode == "offline":
        cfg = GRPOConfig(prompts_per_step=4, **common)
    else:
        cfg = GRPOConfig(rollout="env", credit=mode, partner=partner, max_turns=4, prompts_per_step=2, **common)
    train_grpo(cfg, progress=False)
    return {"mode": name, "group_size": group_size, **time_split(Path(cfg.out) / "metrics.jsonl")}


def time_split(metrics: Path) -> dict[str, Any]:
    """A run's mean seconds per step by part, over the steps after the first (which pays for warm-up)."""
    from trainers.checkpoint import read_metrics

    rows = read_metrics(metrics)
    timed = rows[1:] or rows
    mean = {k: sum(r.get(k, 0.0) for r in timed) / len(timed) for k in rows[0]}
    parts = {
        "learner_generate": mean.get("time_learner_generate", mean.get("time_generate", 0.0)),
        "partner_generate": mean.get("time_partner_generate", 0.0),
        "env": mean.get("time_env", 0.0),
        "reward": mean.get("time_reward", mean.get("time_score", 0.0)),
        "update": mean["time_update"],
        "sync": mean["time_sync"],
    }
    total = sum(parts.values())
    return {
        "trained_utterances_per_step": mean["trained_utterances"],
        "seconds_per_step": total,
        **{f"s_{k}": v for k, v in parts.items()},
        "env_share": parts["env"] / total if total else 0.0,
        "steps_timed": len(timed),
    }


def learning_run(mode: str, rm: Path, out: Path, seed: int, steps: int, rollout_mode: str = "auto") -> dict[str, Any]:
    from benchmarks.preference import learning_config
    from trainers.grpo import train_grpo

    cfg = learning_config(mode, out / f"{mode}-{seed}", rm, steps=steps, seed=seed, rollout_mode=rollout_mode)
    started = time.perf_counter()
    summary = train_grpo(cfg, progress=False)
    before, after = summary["heldout_reward_before"], summary["heldout_reward_after"]
    return {
        "mode": mode,
        "seed": seed,
        "before": before,
        "after": after,
        "gain": after - before,
        "max_kl": summary["max_kl"],
        "seconds": time.perf_counter() - started,
        **time_split(Path(cfg.out) / "metrics.jsonl"),
    }


def learning(args: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    from benchmarks.preference import PREFERENCE_RM, train_preference_rm

    rm = Path(args.reward_model) if args.reward_model else PREFERENCE_RM
    if args.retrain_rm:
        trained = train_preference_rm(tmp / "rm")
        print(f"preference reward model: held-out Pearson {trained['heldout_pearson']:.3f}", flush=True)
        rm = tmp / "rm" / "best"
    rows = []
    for mode in args.modes.split(","):
        for seed in (int(x) for x in args.seeds.split(",")):
            rows.append(learning_run(mode, rm, tmp, seed, args.steps, args.rollout_mode))
            print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| mode | seeds | gain mean | gain min..max | gain sd | before -> after (means) | max KL | s/step | env share |"
        "\n|---|---|---|---|---|---|---|---|---|"
    )
    for mode in args.modes.split(","):
        mine = [r for r in rows if r["mode"] == mode]
        gains = [r["gain"] for r in mine]
        sd = statistics.stdev(gains) if len(gains) > 1 else 0.0
        print(
            f"| {mode} | {len(mine)} | {statistics.mean(gains):+.2f} | {min(gains):+.2f}..{max(gains):+.2f} | "
            f"{sd:.2f} | {statistics.mean(r['before'] for r in mine):.2f} -> "
            f"{statistics.mean(r['after'] for r in mine):.2f} | {max(r['max_kl'] for r in mine):.3f} | "
            f"{statistics.mean(r['seconds_per_step'] for r in mine):.1f} | "
            f"{100 * statistics.mean(r['env_share'] for r in mine):.2f}% |"
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--steps", type=int, default=None, help="default: 3 (time split); the tests' LEARNING steps (--learning)"
    )
    parser.add_argument("--partner", default="scripted", help="the env modes' partner spec (embedded adds its cost)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--modes",
        default="turn,episode,offline",
        help="comma-separated; add /plain to a mode (episode/plain) to run each prompt once per utterance",
    )
    parser.add_argument("--group-size", type=int, default=2, help="time split: G (the learning runs use LEARNING's)")
    parser.add_argument(
        "--reward-model",
        default=None,
        help="default: a fresh, untrained reward model (timing) or the preference's committed one (--learning)",
    )
    parser.add_argument(
        "--retrain-rm", action="store_true", help="--learning: train the preference's reward model here first"
    )
    parser.add_argument("--learning", action="store_true", help="the learning comparison instead of the time split")
    parser.add_argument("--seeds", default="0,1,2", help="--learning: one run per mode and seed")
    parser.add_argument(
        "--rollout-mode",
        default="auto",
        help="--learning: the transformers engine's mode (auto: static cache on a GPU; generate avoids its compiles)",
    )
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
    if args.learning:
        from benchmarks.preference import LEARNING

        args.steps = args.steps or LEARNING["steps"]
        with tempfile.TemporaryDirectory() as tmp:
            rows = learning(args, Path(tmp))
        if args.json:
            write_json_atomic(args.json, {"machine": machine, "learning": rows})
        return

    from rewards.reward_model import RewardModel, RewardModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        rm = Path(args.reward_model) if args.reward_model else Path(tmp) / "rm"
        if not args.reward_model:
            RewardModel.create(RewardModelConfig(max_length=384)).save(rm)
        rows = []
        for mode in args.modes.split(","):
            rows.append(
                run_mode(mode, rm, Path(tmp), args.steps or 3, args.partner, args.max_new_tokens, args.group_size)
            )
            print(json.dumps(rows[-1]), flush=True)
    header = "| mode | utterances/step | s/step | " + " | ".join(PARTS) + " | env share |"
    print("\n" + header + "\n|" + "---|" * (len(PARTS) + 4))
    for r in rows:
        cells = " | ".join(f"{r[f's_{k}']:.2f}" for k in PARTS)
        print(
            f"| {r['mode']} | {r['trained_utterances_per_step']:.0f} | {r['seconds_per_step']:.1f} | {cells} | "
            f"{100 * r['env_share']:.2f}% |"
        )
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
