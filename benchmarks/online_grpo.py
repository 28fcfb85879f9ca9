"""Where a GRPO step's time goes, in the env (`turn` and `episode` credit) and offline, at the same number of
trained utterances per step. A benchmark, not a test: it measures and prints; nothing passes or fails.

    python -m benchmarks.online_grpo [--steps 3] [--partner scripted] [--json benchmarks/results/online_grpo.json]

Each mode trains `--steps` steps on the embedded model from a fresh LoRA, rewarded by a reward model (an
untrained one by default: its forward pass costs the same as a trained one's). Per mode, the mean over steps
after the first (the first pays for warm-up) of: learner generation, partner generation, the env's own work
(stepping, observing, recording: everything but model forward passes), the reward model, the update and the
adapter sync, and the env's share of the step. Sizes (max_turns 4, so each learner plays 2 turns an episode):
turn B=2 episodes x 2 learner turns x G=2 candidates, episode B=2 starts x G=2 episodes x 2 turns, offline B=4
states x G=2: 8 trained utterances per step each.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

PARTS = ("learner_generate", "partner_generate", "env", "reward", "update", "sync")


def run_mode(mode: str, rm: Path, out: Path, steps: int, partner: str, max_new_tokens: int) -> dict[str, Any]:
    from trainers.checkpoint import read_metrics
    from trainers.grpo import GRPOConfig, train_grpo

    common = dict(
        reward_model=str(rm),
        out=str(out / mode),
        steps=steps,
        group_size=2,
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
    rows = read_metrics(out / mode / "metrics.jsonl")
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
        "mode": mode,
        "trained_utterances_per_step": mean.get("trained_utterances", 4 * 2),
        "seconds_per_step": total,
        **{f"s_{k}": v for k, v in parts.items()},
        "env_share": parts["env"] / total if total else 0.0,
        "steps_timed": len(timed),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--partner", default="scripted", help="the env modes' partner spec (embedded adds its cost)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--modes", default="turn,episode,offline")
    parser.add_argument("--reward-model", default=None, help="default: a fresh, untrained reward model")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from rewards.reward_model import RewardModel, RewardModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        rm = Path(args.reward_model) if args.reward_model else Path(tmp) / "rm"
        if not args.reward_model:
            RewardModel.create(RewardModelConfig(max_length=384)).save(rm)
        rows = []
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, rm, Path(tmp), args.steps, args.partner, args.max_new_tokens))
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
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs"
        Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
