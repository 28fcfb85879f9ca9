"""GRPO steps on 1 and on 2 gloo processes at the same global batch, side by side.

    python -m benchmarks.scale [--steps 3] [--prompts-per-step 4] [--group-size 4] [--threads 2] [--json out.json]

Both runs are the real command, `sotopia-env grpo` (states from the scripted env, a fresh untrained reward
model: the timing does not depend on what it learned), once as one plain process and once under
`torchrun --standalone --nproc-per-node 2`, with the same global batch (prompts_per_step x group_size
sequences per step), seeds and settings, and `--threads` CPU threads in all (one process gets them all; two
get half each). Per step it reports, from the main rank's metrics: sampling, scoring, update (which under
torchrun includes waiting for the other rank at the all-reduce) and their sum, averaged over the steps after
the first (model warm-up), and the ratio 1-process / 2-process time. On a machine with 2 cores, two processes
share the cores one process already uses, so no speed-up is expected: the ratio measures the overhead of
splitting the batch (smaller, less efficient batches per process, a second model copy, the all-reduce).

Not here yet: the other half of issue 13's benchmark, rollouts over 1 and 2 vLLM servers, needs the engine
over a server fleet (issue 13, part 2), which does not exist yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = ("time_generate", "time_score", "time_update")


def grpo_args(reward_model: Path, out: Path, a: argparse.Namespace) -> list[str]:
    return [
        "grpo",
        f"--reward-model={reward_model}",
        f"--out={out}",
        f"--steps={a.steps}",
        f"--prompts-per-step={a.prompts_per_step}",
        f"--group-size={a.group_size}",
        f"--max-new-tokens={a.max_new_tokens}",
        f"--max-prompt-tokens={a.max_prompt_tokens}",
        f"--micro-batch={a.prompts_per_step * a.group_size}",  # one forward/backward per step and rank
        f"--lora-layers={a.lora_layers}",
        "--heldout-states=2",
        "--eval-samples=1",
        f"--save-every={a.steps}",
        "--no-tensorboard",
    ]


def run_grpo(args: list[str], out: Path, processes: int, threads: int) -> dict[str, float]:
    """One run; its per-step phase times (means over the steps after the first) and wall time."""
    if processes == 1:
        cmd = [sys.executable, "-m", "benchmarks.cli", *args]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        cmd = [str(torchrun), "--standalone", f"--nproc-per-node={processes}", "-m", "benchmarks.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes)), "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    timed = rows[1:] or rows  # the first step also pays for warm-up
    result = {phase: statistics.mean(r[phase] for r in timed) for phase in PHASES}
    result["step"] = sum(result[p] for p in PHASES)
    result["wall"] = wall
    result["steps_timed"] = len(timed)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompts-per-step", type=int, default=4, help="B states per step, split over the processes")
    p.add_argument("--group-size", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--max-prompt-tokens", type=int, default=320)
    p.add_argument("--lora-layers", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all, shared by the ranks")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = p.parse_args()

    from rewards.reward_model import RewardModel, RewardModelConfig

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        root = Path(tmp)
        RewardModel.create(RewardModelConfig(max_length=a.max_prompt_tokens + 64, lora_layers=2)).save(root / "rm")
        for processes in (1, 2):
            print(f"GRPO, {processes} process(es), {a.steps} steps ...", file=sys.stderr, flush=True)
            out = root / f"p{processes}"
            results[str(processes)] = run_grpo(grpo_args(root / "rm", out, a), out, processes, a.threads)

    one, two = results["1"], results["2"]
    batch = a.prompts_per_step * a.group_size
    print(f"\nGRPO step, global batch {a.prompts_per_step} states x {a.group_size} = {batch} sequences, ")
    print(
        f"{a.max_new_tokens} new tokens, {a.threads} CPU threads in all, {platform.processor() or platform.machine()}"
    )
    print(f"{'seconds per step':<18}{'1 process':>12}{'2 processes':>14}{'1p / 2p':>10}")
    for key in (*PHASES, "step"):
        name = key.removeprefix("time_")
        print(f"{name:<18}{one[key]:>12.2f}{two[key]:>14.2f}{one[key] / two[key]:>10.2f}")
    print(f"{'whole run (wall)':<18}{one['wall']:>12.1f}{two['wall']:>14.1f}{one['wall'] / two['wall']:>10.2f}")
    print(f"\nspeed-up of 2 processes over 1: {one['step'] / two['step']:.2f}x per step (1.00 = none)")
    if a.json:
        a.json.write_text(json.dumps({"config": vars(a) | {"json": str(a.json)}, "results": results}, indent=1))


if __name__ == "__main__":
    main()
