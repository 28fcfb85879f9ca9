"""Env steps per second through the OpenEnv server on loopback against stepping `SocialGymEnv` in-process: a scripted
partner and no reward model, so what is timed is the env and the transport, not a model.

    python -m benchmarks.openenv_speed --episodes 40 --sessions 1 8 64 --out benchmarks/results/openenv_speed_cpu.json

In-process: `TextSession` (the layer the server runs per session) over `SocialGymEnv`, one episode after another.
Served: `sotopia-env serve-env` in its own process, clients (`SotopiaSocialEnv`, openenv-core's EnvClient) on one
event loop in this process, each session playing episodes back to back; `--sessions` concurrent sessions. Where the
time goes: a `state()` round trip (no env work: WebSocket, JSON, Pydantic and the server's hop onto the session's
thread) against a step's round trip, and the in-process step. Errors are counted, not raised: 64 sessions must run
without one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from agents.text_session import TextSession
from sotopia_env import EpisodeStart, ScriptedPolicy
from trainers.interop import ServeEnvConfig
from trainers.openenv_env import SotopiaSocialAction, SotopiaSocialEnv, spawn_server, wait_healthy

PARTNER_LINES = tuple(f"Partner line {k}: what do you think about that?" for k in range(12))
LEARNER_LINE = "I think we can find a price that works for both of us."
SCENARIO = "neg-used-bike"
MAX_TURNS = 20  # 10 learner steps per episode (learner in seat 0)


def in_process(episodes: int) -> dict[str, float]:
    session = TextSession(ScriptedPolicy(PARTNER_LINES), None, max_turns=MAX_TURNS)
    steps, step_seconds = 0, 0.0
    t0 = time.perf_counter()
    for k in range(episodes):
        session.reset(EpisodeStart(SCENARIO, seed=k, seat=0))
        done = False
        while not done:
            t = time.perf_counter()
            done = session.step(LEARNER_LINE).done
            step_seconds += time.perf_counter() - t
            steps += 1
    total = time.perf_counter() - t0
    return {"steps": steps, "seconds": total, "steps_per_s": steps / total, "ms_per_step": 1000 * step_seconds / steps}


async def served(base_url: str, sessions: int, episodes: int) -> dict[str, float]:
    per_session = max(1, episodes // sessions)
    errors: list[str] = []
    step_ms: list[float] = []
    state_ms: list[float] = []

    async def one(index: int) -> int:
        steps = 0
        try:
            async with SotopiaSocialEnv(base_url=base_url, message_timeout_s=600) as env:
                for k in range(per_session):
                    result = await env.reset(scenario=SCENARIO, seed=index * 1000 + k, seat=0)
                    t = time.perf_counter()
                    await env.state()
                    state_ms.append(1000 * (time.perf_counter() - t))
                    while not result.done:
                        t = time.perf_counter()
                        result = await env.step(SotopiaSocialAction(argument=LEARNER_LINE))
                        step_ms.append(1000 * (time.perf_counter() - t))
                        steps += 1
        except Exception as exc:  # counted: the run reports how many sessions failed
            errors.append(f"{type(exc).__name__}: {exc}")
        return steps

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(i) for i in range(sessions)))
    total = time.perf_counter() - t0
    steps = sum(counts)
    return {
        "sessions": sessions,
        "episodes": per_session * sessions,
        "steps": steps,
        "seconds": total,
        "steps_per_s": steps / total,
        "step_round_trip_ms_median": statistics.median(step_ms) if step_ms else None,
        "state_round_trip_ms_median": statistics.median(state_ms) if state_ms else None,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40, help="episodes per measurement (10 learner steps each)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--port", type=int, default=8791)
    parser.add_argument("--out", default="benchmarks/results/openenv_speed_cpu.json")
    args = parser.parse_args()

    local = in_process(args.episodes)
    print(f"in-process: {local['steps_per_s']:.0f} steps/s ({local['ms_per_step']:.3f} ms a step)", flush=True)
    cfg = ServeEnvConfig(partner="scripted:" + "|".join(PARTNER_LINES), max_turns=MAX_TURNS, port=args.port)
    log = Path(tempfile.mkdtemp()) / "server.log"
    process = spawn_server(cfg, log)
    rows = []
    try:
        wait_healthy(f"http://127.0.0.1:{args.port}", timeout_s=120, process=process)
        for sessions in args.sessions:
            row = asyncio.run(served(f"http://127.0.0.1:{args.port}", sessions, max(args.episodes, sessions)))
            rows.append(row)
            print(
                f"served, {sessions} session(s): {row['steps_per_s']:.0f} steps/s, step round trip "
                f"{row['step_round_trip_ms_median']:.2f} ms, state round trip {row['state_round_trip_ms_median']:.2f} "
                f"ms (median), {row['errors']} error(s)",
                flush=True,
            )
    finally:
        process.terminate()
        process.wait(timeout=30)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"2-core x86_64 CPU VM ({platform.python_implementation()} {platform.python_version()})",
        "load_average_at_end": os.getloadavg(),
        "partner": "scripted",
        "reward": None,
        "in_process": local,
        "served": rows,
        "ratio_served_over_in_process": {str(r["sessions"]): r["steps_per_s"] / local["steps_per_s"] for r in rows},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
