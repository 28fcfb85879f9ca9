"""Command-line entry points of the agents package (arguments: sotopia_env/cli_args.py)."""

from __future__ import annotations

import argparse
import uuid

from sotopia_env import SocialParallelEnv

from .engine import SamplingParams
from .runner import EpisodeJob, run_episodes
from .spec import make_policies


def sampling_from_args(args: argparse.Namespace, seed: int | None = None) -> SamplingParams:
    return SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p, seed=seed)


def episode_command(args: argparse.Namespace) -> int:
    env = SocialParallelEnv(max_turns=args.max_turns)  # only to draw a scenario and pairing reproducibly
    options = {}
    if args.scenario:
        options["scenario"] = args.scenario
    if args.characters:
        options["characters"] = tuple(c.strip() for c in args.characters.split(","))
    env.reset(seed=args.seed, options=options)
    # Each invocation plays a new episode (same seed, same sampling): the tag keeps ids unique in --out.
    job = EpisodeJob(env.scenario.id, (env.pair[0].id, env.pair[1].id), seed=args.seed, tag=uuid.uuid4().hex[:8])
    print(f"scenario {job.scenario}: {env.scenario.situation}")
    for seat, (spec, char) in enumerate(zip((args.agent0, args.agent1), env.pair)):
        print(f"  agent_{seat}: {char.name} ({char.occupation}) played by {spec}; goal: {env.scenario.roles[seat].goal}")
    print(f"loading policies {args.agent0!r} and {args.agent1!r} ...", flush=True)
    policies = make_policies([args.agent0, args.agent1], sampling_from_args(args, seed=args.seed))
    [episode] = run_episodes(
        [job], (policies[0], policies[1]), args.out, batch_size=1,
        env_kwargs={"max_turns": args.max_turns}, progress=False, render=True,
    )
    print(f"\n{len(episode.turns)} turns, ended by {episode.end_reason}; written to {args.out} (id {episode.id})")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    import os

    from .serve import server_command, server_env

    cmd = server_command(args.model, port=args.port, host=args.host, served_name=args.served_name)
    print("starting:", " ".join(cmd), flush=True)
    os.execve(cmd[0], cmd, server_env())
    return 0  # not reached
