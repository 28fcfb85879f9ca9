"""How far an episode's dialogue is independent of the batch it was played in, per engine (a measurement).

Each request is seeded from (run seed, episode id, turn, seat), so the random draws of an episode are its
own. What can still differ between batch compositions is floating point: a batch of other shapes pads and
schedules differently, and a near-tie between two tokens can go the other way. This plays the same
episodes once together (one batch) and once one at a time, and counts the episodes whose dialogues differ.

    python -m benchmarks.seed_stability --episodes 8 --engines transformers vllm
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from agents.engine import SamplingParams, close_engine
from agents.llm_agent import LLMAgent
from agents.runner import jobs_for, run_episodes
from sotopia_env import read_episodes, split


def make_engine(name: str):  # noqa: ANN201
    if name == "vllm":
        from agents.vllm_engine import VLLMEngine

        return VLLMEngine("embedded", max_model_len=2048)
    from agents.transformers_engine import TransformersEngine

    return TransformersEngine("embedded")


def measure(name: str, episodes: int, max_turns: int, max_new_tokens: int) -> dict:
    engine = make_engine(name)
    agent = LLMAgent(engine, SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, top_p=0.95, seed=0))
    jobs = jobs_for(split("hard")[:episodes], pairs_per_scenario=1)[:episodes]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, batch in (("together", len(jobs)), ("alone", 1)):
            path = Path(tmp) / f"{label}.jsonl"
            t0 = time.perf_counter()
            run_episodes(
                jobs, (agent, agent), path, batch_size=batch, env_kwargs={"max_turns": max_turns}, progress=False
            )
            runs[label] = ({e.id: [t.argument for t in e.turns] for e in read_episodes(path)}, time.perf_counter() - t0)
    close_engine(engine)
    together, alone = runs["together"][0], runs["alone"][0]
    differ = sorted(k for k in together if together[k] != alone.get(k))
    turns = sum(len(v) for v in together.values())
    same_turns = sum(a == b for k in together for a, b in zip(together[k], alone.get(k, [])))
    return {
        "engine": name,
        "episodes": len(together),
        "episodes_differing": len(differ),
        "turns": turns,
        "turns_identical": same_turns,
        "seconds_together": round(runs["together"][1], 1),
        "seconds_alone": round(runs["alone"][1], 1),
        "differing_ids": differ,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--max-turns", type=int, default=6)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--engines", nargs="+", default=["transformers", "vllm"], choices=["transformers", "vllm"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()} {platform.processor() or ''}; embedded model, temperature 1.0, top_p 0.95")
    for name in args.engines:
        print(json.dumps(measure(name, args.episodes, args.max_turns, args.max_new_tokens)), flush=True)


if __name__ == "__main__":
    main()
