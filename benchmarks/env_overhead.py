"""Env overhead per step with scripted agents and no model: ours vs sotopia 0.1.5's ParallelSotopiaEnv.

    python -m benchmarks.env_overhead [--episodes 300] [--repeats 5] [--peer-python .venv-peer/bin/python]

Both envs play the same thing: round-robin, two scripted agents that speak a fixed line every turn,
episodes of 20 turns ended by the turn limit (ours: `max_turns`; sotopia: its rule-based termination
evaluator, `RuleBasedTerminatedEvaluator(max_turn_number=20)`), reset included. The peer runs when
`sotopia` imports here, or in the interpreter named by --peer-python (sotopia pins pettingzoo 1.25 and
openai<2, so it lives in its own venv: `bash benchmarks/setup_peer.sh`).

Each run is a fresh process that plays `--warmup` episodes untimed, collects garbage, then times
`--episodes` episodes: both envs are timed warm, and neither pays inside its timed loop for collecting the
objects its imports left behind. The two sides run alternately, `--repeats` times (who goes first swaps
each round), so that a burst of other work on a shared machine hits both. Prints, per side, the median
us/step with its spread, and the median and spread of the per-round ratios, by the wall clock and by each
process's CPU time (the wall clock also counts the time others held the core; the CPU time does not), with
the load average before and after; --json writes every run.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TURNS = 20
LINE = "I hear you. Let me suggest something that could work for both of us."


def bench_ours(episodes: int, warmup: int = 0) -> dict[str, float]:
    from sotopia_env import SocialParallelEnv

    env = SocialParallelEnv(max_turns=TURNS)

    def play(first: int, count: int) -> int:
        steps = 0
        for ep in range(first, first + count):
            env.reset(seed=ep)
            while env.agents:
                env.step({env.active_agents[0]: LINE})
                steps += 1
        return steps

    play(episodes, warmup)
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    steps = play(0, episodes)
    return _figures(steps, time.perf_counter() - start, time.process_time() - start_cpu)


def _figures(steps: int, elapsed: float, cpu: float) -> dict[str, float]:
    """Wall-clock figures, and the CPU time of this process per step: on a machine shared with other work
    the wall clock also counts the time others held the core, the CPU time does not."""
    return {
        "steps": steps,
        "seconds": elapsed,
        "us_per_step": 1e6 * elapsed / steps,
        "steps_per_s": steps / elapsed,
        "cpu_us_per_step": 1e6 * cpu / steps,
    }


def bench_sotopia(episodes: int, warmup: int = 0) -> dict[str, float]:
    os.environ.setdefault("SOTOPIA_STORAGE_BACKEND", "local")
    from sotopia.agents import Agents, BaseAgent
    from sotopia.database import AgentProfile, EnvironmentProfile
    from sotopia.envs import ParallelSotopiaEnv
    from sotopia.envs.evaluators import RuleBasedTerminatedEvaluator
    from sotopia.messages import AgentAction

    profile = EnvironmentProfile(
        scenario="One person is selling a used road bike; the other has come to look at it.",
        agent_goals=["Sell the bike for at least $420.", "Buy the bike for no more than $350."],
        relationship=0,
    )

    class Scripted(BaseAgent):
        def act(self, obs):  # noqa: ANN001, ANN201
            return AgentAction(action_type="speak", argument=LINE)

    people = [
        AgentProfile(first_name="Ben", last_name="Kowalski", age=41, occupation="dealer"),
        AgentProfile(first_name="Amara", last_name="Okafor", age=34, occupation="nurse"),
    ]
    env = ParallelSotopiaEnv(
        env_profile=profile,
        action_order="round-robin",
        evaluators=[RuleBasedTerminatedEvaluator(max_turn_number=TURNS, max_stale_turn=2)],
    )
    agents = Agents({p.first_name: Scripted(agent_profile=p) for p in people})

    def play(count: int) -> int:
        steps = 0
        for _ in range(count):
            obs = env.reset(agents=agents)
            done = False
            while not done:
                actions = {name: agents[name].act(obs[name]) for name in env.agents}
                obs, _, terminated, _, _ = env.step(actions)
                steps += 1
                done = all(terminated.values())
        return steps

    play(warmup)
    gc.collect()
    start, start_cpu = time.perf_counter(), time.process_time()
    steps = play(episodes)
    return _figures(steps, time.perf_counter() - start, time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300, help="timed episodes per run")
    parser.add_argument("--warmup", type=int, default=20, help="untimed episodes each run plays first")
    parser.add_argument("--repeats", type=int, default=5, help="runs per side, alternating")
    parser.add_argument("--peer-python", default=None, help="interpreter with sotopia==0.1.5 installed")
    parser.add_argument("--only", choices=["ours", "peer"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    if args.only:
        bench = bench_ours if args.only == "ours" else bench_sotopia
        print(json.dumps(bench(args.episodes, args.warmup)))
        return

    default_peer = Path(".venv-peer/bin/python")
    peer_python = args.peer_python or (str(default_peer) if default_peer.exists() else None)
    if peer_python is None and _imports_sotopia():
        peer_python = sys.executable
    sides = {"ours": sys.executable} | ({"peer": peer_python} if peer_python else {})
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for r in range(args.repeats):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for side in order:
            runs[side].append(_run(sides[side], side, args.episodes, args.warmup))
    load_after = os.getloadavg()
    result: dict = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "episodes": args.episodes,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "runs": runs,
    }
    print(f"machine: {result['machine']}; {args.episodes} episodes x {TURNS} steps, scripted agents, no model")
    print(
        f"{args.repeats} alternating runs per side; load average {_load(load_before)} before, {_load(load_after)} after"
    )
    names = {"ours": "sotopia-env SocialParallelEnv  ", "peer": "sotopia 0.1.5 ParallelSotopiaEnv"}
    for side, side_runs in runs.items():
        wall, cpu = _spread([r["us_per_step"] for r in side_runs]), _spread([r["cpu_us_per_step"] for r in side_runs])
        result[side] = {"us_per_step": wall, "cpu_us_per_step": cpu}
        print(f"{names[side]}: {_fmt(wall)} us/step, CPU {_fmt(cpu)} us/step (median [min-max])")
    if "peer" in runs:
        for key, label in (("us_per_step", "wall clock"), ("cpu_us_per_step", "CPU time")):
            ratios = _spread([p[key] / o[key] for o, p in zip(runs["ours"], runs["peer"])])
            result["speedup" if key == "us_per_step" else "cpu_speedup"] = ratios
            print(f"ours is {ratios['median']:.1f}x faster per step by the {label} (per-round ratios {_fmt(ratios)})")
    else:
        print("peer not run: install it with `bash benchmarks/setup_peer.sh` (or pass --peer-python)")
    if args.json:
        # Here, not at the top: the peer's interpreter imports this module too, with other versions of the
        # env's dependencies installed.
        from sotopia_env.jsonio import write_json_atomic

        write_json_atomic(args.json, result)


def _imports_sotopia() -> bool:
    try:
        import sotopia  # noqa: F401
    except ImportError:
        return False
    return True


def _run(python: str, side: str, episodes: int, warmup: int) -> dict[str, float]:
    """One timed run of one side, in a fresh process."""
    out = subprocess.run(
        [python, "-m", "benchmarks.env_overhead", "--only", side, "--episodes", str(episodes), "--warmup", str(warmup)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "SOTOPIA_STORAGE_BACKEND": "local"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _fmt(spread: dict[str, float]) -> str:
    return f"{spread['median']:.1f} [{spread['min']:.1f}-{spread['max']:.1f}]"


def _load(load: tuple[float, float, float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


if __name__ == "__main__":
    sys.exit(main())
