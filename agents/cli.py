"""The agents package's commands: `episode`, `collect`, `serve`. Each takes its config (agents.configs)."""

from __future__ import annotations

import sys
import uuid

from sotopia_env import SocialParallelEnv, split

from .configs import CollectConfig, EpisodeConfig, ServeConfig
from .runner import EpisodeJob, jobs_for, load_pool, run_episodes
from .spec import make_policies


def episode_command(cfg: EpisodeConfig) -> int:
    env = SocialParallelEnv(max_turns=cfg.max_turns)  # only to draw a scenario and pairing reproducibly
    options = {}
    if cfg.scenario:
        options["scenario"] = cfg.scenario
    if cfg.characters:
        options["characters"] = tuple(c.strip() for c in cfg.characters.split(","))
    env.reset(seed=cfg.seed, options=options)
    # Each invocation plays a new episode (same seed, same sampling): the tag keeps ids unique in --out.
    job = EpisodeJob(env.scenario.id, (env.pair[0].id, env.pair[1].id), seed=cfg.seed, tag=uuid.uuid4().hex[:8])
    print(f"scenario {job.scenario}: {env.scenario.situation}")
    for seat, (spec, char) in enumerate(zip((cfg.agent0, cfg.agent1), env.pair)):
        print(
            f"  agent_{seat}: {char.name} ({char.occupation}) played by {spec}; goal: {env.scenario.roles[seat].goal}"
        )
    print(f"loading policies {cfg.agent0!r} and {cfg.agent1!r} ...", flush=True)
    policies = make_policies([cfg.agent0, cfg.agent1], cfg.sampling(seed=cfg.seed))
    [episode] = run_episodes(
        [job],
        (policies[0], policies[1]),
        cfg.out,
        batch_size=1,
        env_kwargs={"max_turns": cfg.max_turns},
        progress=False,
        render=True,
    )
    print(f"\n{len(episode.turns)} turns, ended by {episode.end_reason}; written to {cfg.out} (id {episode.id})")
    return 0


def collect_command(cfg: CollectConfig) -> int:
    scenarios, characters, pairings = load_pool(cfg.library)  # before any policy loads: a bad file ends here
    chosen = split(cfg.split, scenarios)[: cfg.scenarios]
    if not chosen:
        raise ValueError(f"split {cfg.split!r} of {cfg.library or 'the shipped library'} has no scenarios")
    jobs = jobs_for(
        chosen,
        cfg.pairs_per_scenario,
        cfg.episodes_per_pair,
        cfg.both_seats,
        seed=cfg.seed,
        characters=characters,
        pairings=pairings,
    )
    specs = [cfg.policy, cfg.partner or cfg.policy]
    policies = make_policies(specs, cfg.sampling(seed=cfg.seed))
    env_kwargs = {"scenarios": scenarios, "characters": characters, "max_turns": cfg.max_turns}
    new = run_episodes(jobs, (policies[0], policies[1]), cfg.out, batch_size=cfg.batch_size, env_kwargs=env_kwargs)
    print(f"{len(new)} new episode(s), {len(jobs)} in the plan -> {cfg.out}")
    return 0


def serve_command(cfg: ServeConfig) -> int:
    import os

    from .serve import is_loopback, server_command, server_env

    key = os.environ.get(cfg.api_key_env) or None
    cmd = server_command(cfg.model, port=cfg.port, host=cfg.host, served_name=cfg.served_name)
    print("starting:", " ".join(cmd), flush=True)
    if key:
        print(
            f"every /v1 request must carry the API key in ${cfg.api_key_env} (clients: set $OPENAI_API_KEY to it)",
            flush=True,
        )
    elif not is_loopback(cfg.host):
        print(
            f"warning: serving on {cfg.host}:{cfg.port} off loopback with no API key: anyone who can reach this "
            "port can generate with the model and load a LoRA adapter from any path the server can read; set "
            f"${cfg.api_key_env}",
            file=sys.stderr,
            flush=True,
        )
    os.execve(cmd[0], cmd, server_env(key))
    return 0  # not reached
