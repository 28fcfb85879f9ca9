"""Run many episodes between two policies, generation batched across episodes, resumable.

Each `EpisodeJob` is an episode start (`sotopia_env.EpisodeStart`: scenario, characters in seat order, seed) and a
tag, with a deterministic key (scenario, characters, seed, tag) which its request seeds derive from; the episode's
id is that key scoped by the run's id (`collect` records one per --out), so two runs' episodes never share an id
while a resumed run makes the ids it would have made. Finished episodes are appended to the output file as they
finish; a rerun skips ids that are already there, so an interrupted run resumes without losing or repeating an
episode.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sotopia_env import Episode, EpisodeStart, Policy, SocialParallelEnv
from sotopia_env.env import step_envs
from sotopia_env.episode import episode_ids
from sotopia_env.jsonio import read_json
from sotopia_env.policy import act_batch
from sotopia_env.provenance import scoped_id
from sotopia_env.scenarios import (
    Character,
    Pairing,
    Scenario,
    library_characters,
    library_pairings,
    library_scenarios,
    load_characters,
    load_scenarios,
    scenario_pairings,
)

from .configs import library_problem

Pool = tuple[dict[str, Scenario], dict[str, Character], Mapping[str, Sequence[Pairing]]]


def load_pool(library: str | Path | None = None) -> Pool:
    """Scenarios, characters and pairings by scenario id of a library folder (generate-tasks and
    import-sotopia write one: scenarios.jsonl, characters.jsonl, optionally pairings.json), or of the
    shipped library when `library` is None."""
    if library is None:
        return library_scenarios(), library_characters(), library_pairings()
    problem = library_problem(library)
    if problem:
        raise FileNotFoundError(
            f"library {library}: {problem}; write one with `sotopia-env generate-tasks` or `import-sotopia`"
        )
    root = Path(library)
    path = root / "pairings.json"
    raw = read_json(path) if path.is_file() else {}
    shape = 'it maps scenario ids to lists of character id pairs: {"scenario-id": [["char-a", "char-b"], ...]}'
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a JSON {type(raw).__name__}, not an object; {shape}")
    pairings: dict[str, list[Pairing]] = {}
    for sid, pairs in raw.items():
        for pair in pairs if isinstance(pairs, list) else [pairs]:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(c, str) for c in pair)):
                raise ValueError(f"{path}: scenario {sid!r}: {pair!r} is not a pair of character ids; {shape}")
            pairings.setdefault(sid, []).append((pair[0], pair[1]))
    return load_scenarios(root / "scenarios.jsonl"), load_characters(root / "characters.jsonl"), pairings


@dataclass(frozen=True)
class EpisodeJob:
    """An episode to play: its start (the characters named, in seat order), a tag and the run it belongs to."""

    start: EpisodeStart
    tag: str = ""  # distinguishes repeats of the same setting (e.g. a seat)
    run: str = ""  # the run's id (sotopia_env.provenance): in the episode's id, never in its request seeds

    def __post_init__(self) -> None:
        if self.start.characters is None or self.start.seed is None:
            raise ValueError(f"an episode job names its characters and seed; {self.start} leaves one to chance")

    @property
    def key(self) -> str:
        """What the episode's request seeds derive from: the same in every run, so a run is reproducible."""
        start = self.start
        base = f"{start.scenario}|{start.characters[0]}|{start.characters[1]}|{start.seed}"
        return f"{base}|{self.tag}" if self.tag else base

    @property
    def id(self) -> str:
        """The episode's id: its key, scoped by the run, so two runs' episodes never share an id."""
        return scoped_id(self.run, self.key)


def jobs_for(
    scenarios: Sequence[Scenario],
    pairs_per_scenario: int = 1,
    episodes_per_pair: int = 1,
    both_seats: bool = False,
    seed: int = 0,
    characters: Collection[str] | None = None,
    pairings: Mapping[str, Sequence[Pairing]] | None = None,
) -> list[EpisodeJob]:
    """Jobs over scenarios x character pairings (`scenario_pairings`: the pairings listed for a scenario, by
    default the shipped library's, else pairs of `characters` (default: the shipped ones) drawn from `seed`)."""
    rng = random.Random(seed)
    characters = library_characters() if characters is None else characters
    jobs = []
    for s in scenarios:
        for a, b in scenario_pairings(s.id, characters, pairs_per_scenario, rng, listed=pairings):
            orders = [(a, b), (b, a)] if both_seats else [(a, b)]
            for order in orders:
                for k in range(episodes_per_pair):
                    jobs.append(EpisodeJob(EpisodeStart(s.id, seed + k, characters=order)))
    return jobs


def run_episodes(
    jobs: Iterable[EpisodeJob],
    policies: tuple[Policy, Policy],
    out_path: str | Path,
    batch_size: int = 8,
    env_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
    render: bool = False,
) -> list[Episode]:
    """Play the jobs not yet in `out_path`, `batch_size` episodes at a time; returns the new episodes.

    Within a batch, each round asks each seat's policy once for all episodes where that seat is to act.
    """
    from tqdm import tqdm

    done = episode_ids(out_path)
    todo = [j for j in jobs if j.id not in done]
    models = {f"agent_{i}": getattr(p, "model_name", type(p).__name__) for i, p in enumerate(policies)}
    kwargs = {"agent_models": models, **(env_kwargs or {})}
    finished: list[Episode] = []
    bar = tqdm(total=len(todo), desc="episodes", unit="ep", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        envs = [
            SocialParallelEnv(episodes_path=out_path, render_mode="human" if render else None, **kwargs) for _ in batch
        ]
        observations = []
        for env, job in zip(envs, batch):
            obs, _ = env.reset(seed=job.start.seed, options=job.start.options())
            env.episode.id = job.id
            observations.append(obs)
        while any(env.agents for env in envs):
            actions: list[dict[str, Any]] = [{} for _ in envs]
            for seat, policy in enumerate(policies):
                agent = f"agent_{seat}"
                waiting = [i for i, env in enumerate(envs) if agent in env.active_agents]
                seen = [observations[i][agent] for i in waiting]
                keys = [(batch[i].key, o["turn"], seat) for i, o in zip(waiting, seen)]
                for i, action in zip(waiting, act_batch(policy, seen, keys)):
                    actions[i][agent] = action
            live = [i for i, env in enumerate(envs) if env.agents]
            # One reward call for the round's utterances across the batch (the reward model's batch form).
            for i, result in zip(live, step_envs([envs[i] for i in live], [actions[i] for i in live])):
                observations[i] = result[0]
                if not envs[i].agents:  # written to out_path by the env as it ended
                    finished.append(envs[i].episode)
                    bar.update(1)
    bar.close()
    return finished
