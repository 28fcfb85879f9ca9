"""Reward-model scoring throughput: utterances/s batched vs one at a time.

    python -m benchmarks.reward_throughput [--pairs 64] [--batch-size 16]

Real dialogue states (hard scenarios after two opening turns) with short utterances, scored by a freshly
initialised reward model on the embedded base (the weights do not change the cost). The cache is cleared
between runs so every pair is computed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

from benchmarks.rollout_throughput import dialogue_states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()
    import torch

    from rewards.reward_model import RewardModel, RewardModelConfig

    rm = RewardModel.create(RewardModelConfig(max_length=args.max_length))
    states = [conv[1]["content"] for conv in dialogue_states(args.pairs)]
    utterances = [f"Would you consider {300 + 10 * i} dollars?" for i in range(args.pairs)]
    rm.score(states[:4], utterances[:4])  # warm-up
    rows = {}
    for name, bs in (("one at a time", 1), (f"batched ({args.batch_size})", args.batch_size)):
        rm.clear_cache()
        start = time.perf_counter()
        rm.score(states, utterances, batch_size=bs)
        elapsed = time.perf_counter() - start
        rows[name] = args.pairs / elapsed
    rm.clear_cache()
    machine = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    )
    print(
        f"machine: {machine}; {args.pairs} (state, utterance) pairs, up to {args.max_length} tokens, SmolLM2-135M reward model"
    )
    for name, rate in rows.items():
        print(f"{name:16s} {rate:7.2f} utterances/s")
    single, batched = rows.values()
    print(f"batched is {batched / single:.1f}x one at a time")


if __name__ == "__main__":
    main()
