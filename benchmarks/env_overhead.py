"""Env overhead per step with scripted agents and no model: ours vs sotopia 0.1.5's ParallelSotopiaEnv.

    python -m benchmarks.env_overhead [--episodes 200] [--peer-python .venv-peer/bin/python]

Both envs play the same thing: round-robin, two scripted agents that speak a fixed line every turn,
episodes of 20 turns ended by the turn limit (ours: `max_turns`; sotopia: its rule-based termination
evaluator, `RuleBasedTerminatedEvaluator(max_turn_number=20)`), reset included. The peer runs when
`sotopia` imports here, or in the interpreter named by --peer-python (sotopia pins pettingzoo 1.25 and
openai<2, so it lives in its own venv: `bash benchmarks/setup_peer.sh`). Prints us/step, steps/s and
the ratio, by the wall clock and by each process's CPU time (on a machine shared with other work the wall
clock also counts the time others held the core); --json writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TURNS = 20
LINE = "I hear you. Let me suggest something that could work for both of us."


def bench_ours(episodes: int) -> dict[str, float]:
    from sotopia_env import SocialParallelEnv

    env = SocialParallelEnv(max_turns=TURNS)
    steps = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for ep in range(episodes):
        env.reset(seed=ep)
        while env.agents:
            env.step({env.active_agents[0]: LINE})
            steps += 1
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


def bench_sotopia(episodes: int) -> dict[str, float]:
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
    steps = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(episodes):
        obs = env.reset(agents=agents)
        done = False
        while not done:
            actions = {name: agents[name].act(obs[name]) for name in env.agents}
            obs, _, terminated, _, _ = env.step(actions)
            steps += 1
            done = all(terminated.values())
    return _figures(steps, time.perf_counter() - start, time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--peer-python", default=None, help="interpreter with sotopia==0.1.5 installed")
    parser.add_argument("--only-peer", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    if args.only_peer:
        print(json.dumps(bench_sotopia(args.episodes)))
        return

    peer = None
    default_peer = Path(".venv-peer/bin/python")
    peer_python = args.peer_python or (str(default_peer) if default_peer.exists() else None)
    # Alternate the two so that machine noise hits both; keep the better of two runs each.
    runs_ours, runs_peer = [], []
    for _ in range(2):
        runs_ours.append(bench_ours(args.episodes))
        try:
            import sotopia  # noqa: F401

            runs_peer.append(bench_sotopia(args.episodes))
        except ImportError:
            if peer_python:
                out = subprocess.run(
                    [peer_python, "-m", "benchmarks.env_overhead", "--only-peer", "--episodes", str(args.episodes)],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "SOTOPIA_STORAGE_BACKEND": "local"},
                )
                runs_peer.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours = _best(runs_ours)
    if runs_peer:
        peer = _best(runs_peer)
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "ours": ours,
        "sotopia_0_1_5": peer,
    }
    print(f"machine: {result['machine']}; {args.episodes} episodes x {TURNS} steps, scripted agents, no model")
    print(
        f"sotopia-env SocialParallelEnv : {ours['us_per_step']:8.1f} us/step  {ours['steps_per_s']:9.0f} steps/s"
        f"  ({ours['cpu_us_per_step']:.1f} us CPU/step)"
    )
    if peer:
        ratio, cpu_ratio = peer["us_per_step"] / ours["us_per_step"], peer["cpu_us_per_step"] / ours["cpu_us_per_step"]
        result["speedup"], result["cpu_speedup"] = ratio, cpu_ratio
        print(
            f"sotopia 0.1.5 ParallelSotopiaEnv: {peer['us_per_step']:8.1f} us/step  {peer['steps_per_s']:9.0f} steps/s"
            f"  ({peer['cpu_us_per_step']:.1f} us CPU/step)"
        )
        print(f"ours is {ratio:.1f}x faster per step ({cpu_ratio:.1f}x in CPU time)")
    else:
        print("peer not run: install it with `bash benchmarks/setup_peer.sh` (or pass --peer-python)")
    if args.json:
        # Here, not at the top: the peer's interpreter imports this module too, with other versions of the
        # env's dependencies installed.
        from sotopia_env.jsonio import write_json_atomic

        write_json_atomic(args.json, result)


def _best(runs: list[dict[str, float]]) -> dict[str, float]:
    """The better of the runs, wall clock and CPU time each taken from its own best run."""
    best = dict(min(runs, key=lambda r: r["us_per_step"]))
    best["cpu_us_per_step"] = min(r["cpu_us_per_step"] for r in runs)
    return best


if __name__ == "__main__":
    sys.exit(main())
