"""Env overhead per step with scripted agents and no model: ours vs sotopia 0.1.5's ParallelSotopiaEnv.

    python -m benchmarks.env_overhead [--episodes 200] [--peer-python .venv-peer/bin/python]

Both envs play the same thing: round-robin, two scripted agents that speak a fixed line every turn,
episodes of 20 turns ended by the turn limit (ours: `max_turns`; sotopia: its rule-based termination
evaluator, `RuleBasedTerminatedEvaluator(max_turn_number=20)`), reset included. The peer runs when
`sotopia` imports here, or in the interpreter named by --peer-python (sotopia pins pettingzoo 1.25 and
openai<2, so it lives in its own venv: `bash benchmarks/setup_peer.sh`). Prints us/step, steps/s and
the ratio; --json writes them.
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
    start = time.perf_counter()
    for ep in range(episodes):
        env.reset(seed=ep)
        while env.agents:
            env.step({env.active_agents[0]: LINE})
            steps += 1
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "us_per_step": 1e6 * elapsed / steps, "steps_per_s": steps / elapsed}


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
    start = time.perf_counter()
    for _ in range(episodes):
        obs = env.reset(agents=agents)
        done = False
        while not done:
            actions = {name: agents[name].act(obs[name]) for name in env.agents}
            obs, _, terminated, _, _ = env.step(actions)
            steps += 1
            done = all(terminated.values())
    elapsed = time.perf_counter() - start
    return {"steps": steps, "seconds": elapsed, "us_per_step": 1e6 * elapsed / steps, "steps_per_s": steps / elapsed}


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
    ours = min(runs_ours, key=lambda r: r["us_per_step"])
    if runs_peer:
        peer = min(runs_peer, key=lambda r: r["us_per_step"])
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
        "ours": ours,
        "sotopia_0_1_5": peer,
    }
    print(f"machine: {result['machine']}; {args.episodes} episodes x {TURNS} steps, scripted agents, no model")
    print(f"sotopia-env SocialParallelEnv : {ours['us_per_step']:8.1f} us/step  {ours['steps_per_s']:9.0f} steps/s")
    if peer:
        ratio = peer["us_per_step"] / ours["us_per_step"]
        result["speedup"] = ratio
        print(
            f"sotopia 0.1.5 ParallelSotopiaEnv: {peer['us_per_step']:8.1f} us/step  {peer['steps_per_s']:9.0f} steps/s"
        )
        print(f"ours is {ratio:.1f}x faster per step")
    else:
        print("peer not run: install it with `bash benchmarks/setup_peer.sh` (or pass --peer-python)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.exit(main())
