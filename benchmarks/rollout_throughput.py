"""Rollout throughput: new tokens/s for a batch of dialogue states, transformers vs vLLM engines.

    python -m benchmarks.rollout_throughput [--states 32] [--n 1] [--max-new-tokens 64] [--engines transformers,vllm]
    python -m benchmarks.rollout_throughput --states 64,256 --engines vllm,transformers-static  # batch sizes in one run

Engines: transformers (plain `generate`, dynamic KV cache), transformers-static (static KV cache, which
transformers compiles with CUDA graphs on a GPU), transformers-continuous (continuous batching with a
paged cache, `generate_batch`), vllm. The transformers rows compare the ways to make that path fast.

The states are real observations: hard scenarios with two scripted opening turns, rendered through the
LLM agent's chat format (the same prompts GRPO samples from). Each engine generates once to warm up, then
`--repeats` timed passes; the best pass counts. Engine start-up is reported separately; with several
`--states` counts each engine starts once and measures every batch size. `--vllm-kwargs` passes extra
arguments to vLLM's `LLM` (e.g. '{"attention_config": {"backend": "TRITON_ATTN"}}'). Runs on CPU (float32)
or GPU (bfloat16), whichever torch sees.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

from sotopia_env.jsonio import write_json_atomic


def dialogue_states(count: int) -> list[list[dict[str, str]]]:
    from agents.llm_agent import build_messages
    from sotopia_env import SocialParallelEnv, split

    env = SocialParallelEnv(max_turns=20)
    scenarios = split("hard")
    states = []
    for i in range(count):
        obs, _ = env.reset(seed=i, options={"scenario": scenarios[i % len(scenarios)].id})
        obs, *_ = env.step({"agent_0": "Hi, thanks for meeting me. Can we talk about this?"})
        obs, *_ = env.step({"agent_1": "Sure, what do you have in mind?"})
        states.append(build_messages(obs["agent_0"]))
    return states


def measure(engine, states, params, repeats: int) -> dict[str, float]:
    engine.generate(states[: max(1, len(states) // 4)], params)  # warm-up
    best = None
    for _ in range(repeats):
        start = time.perf_counter()
        results = engine.generate(states, params)
        elapsed = time.perf_counter() - start
        tokens = sum(len(s.token_ids) for r in results for s in r)
        run = {"seconds": elapsed, "new_tokens": tokens, "tokens_per_s": tokens / elapsed}
        best = run if best is None or run["tokens_per_s"] > best["tokens_per_s"] else best
    return best  # type: ignore[return-value]


def start_engine(name: str, batch_size: int, vllm_kwargs: dict) -> Any:
    if name == "vllm":
        from agents.vllm_engine import VLLMEngine

        return VLLMEngine("embedded", max_model_len=4096, **vllm_kwargs)
    from agents.transformers_engine import TransformersEngine

    return TransformersEngine("embedded", batch_size=batch_size, mode=name.partition("-")[2] or "generate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", default="32", help="dialogue states per batch; several: 64,256")
    parser.add_argument("--n", type=int, default=1, help="samples per state")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", default="transformers,vllm")
    parser.add_argument("--vllm-kwargs", default="{}", help="JSON object of extra arguments to vLLM's LLM")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    sizes = [int(x) for x in str(args.states).split(",")]

    import torch

    from agents.engine import SamplingParams

    device = "cuda" if torch.cuda.is_available() else "cpu"
    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    states = dialogue_states(max(sizes))
    params = SamplingParams(n=args.n, max_new_tokens=args.max_new_tokens, temperature=0.7, seed=0)
    rows = {}
    for name in args.engines.split(","):
        if not (name.startswith("transformers") or name == "vllm"):
            raise SystemExit(f"unknown engine {name!r}")
        start = time.perf_counter()
        try:
            engine = start_engine(name, max(sizes) * args.n, json.loads(args.vllm_kwargs))
        except Exception as exc:  # e.g. vLLM missing or failing on this machine: the other engines still run
            rows[name] = {"error": f"start: {type(exc).__name__}: {exc}"[:300], "tokens_per_s": 0.0, "new_tokens": 0}
            rows[name].update(seconds=0.0, startup_s=time.perf_counter() - start)
            print(name, rows[name], flush=True)
            continue
        startup = time.perf_counter() - start
        for size in sizes:
            key = name if len(sizes) == 1 else f"{name}@{size}"
            try:
                rows[key] = {
                    "startup_s": startup,
                    "states": size,
                    **measure(engine, states[:size], params, args.repeats),
                }
            except Exception as exc:  # one failing engine must not hide the others' rows
                rows[key] = {
                    "startup_s": startup,
                    "states": size,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                    "tokens_per_s": 0.0,
                    "new_tokens": 0,
                    "seconds": 0.0,
                }
            print(key, rows[key], flush=True)
        if hasattr(engine, "close"):
            engine.close()
        del engine
    print(
        f"machine: {machine}; {args.states} dialogue states x n={args.n}, up to {args.max_new_tokens} new tokens, embedded SmolLM2-135M"
    )
    for name, r in rows.items():
        print(
            f"{name:24s} {r['tokens_per_s']:8.1f} new tokens/s  ({r['new_tokens']} tokens in {r['seconds']:.1f}s; start-up {r['startup_s']:.0f}s)"
        )
    if args.json:
        write_json_atomic(args.json, {"machine": machine, "rows": rows})


if __name__ == "__main__":  # vLLM spawns its engine process: construction must sit under this guard
    main()
