"""Randomness belongs to the episode: its samples depend on (run seed, episode id, turn, seat), never on the
batch it landed in, so resumed, concurrent and differently batched runs reproduce it."""

from __future__ import annotations

from agents.engine import SamplingParams, request_seed
from agents.llm_agent import LLMAgent
from agents.runner import EpisodeJob, run_episodes
from sotopia_env import EpisodeStart, read_episodes

JOBS = [
    EpisodeJob(EpisodeStart("acc-sleepover-rules", 0, characters=("dana_levi", "jasmine_kaur"))),
    EpisodeJob(
        EpisodeStart("acc-sleepover-rules", 1, characters=("dana_levi", "jasmine_kaur"))
    ),  # a repeat of the same cell
    EpisodeJob(EpisodeStart("com-art-commission", 0, characters=("amara_okafor", "rosa_delgado"))),
]


def dialogues(path) -> dict[str, list[tuple[str, str]]]:
    return {e.id: [(t.agent, t.argument) for t in e.turns] for e in read_episodes(path)}


def play(engine, jobs, path, batch_size: int) -> dict[str, list[tuple[str, str]]]:
    agent = LLMAgent(engine, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=11))
    run_episodes(jobs, (agent, agent), path, batch_size=batch_size, env_kwargs={"max_turns": 4}, progress=False)
    return dialogues(path)


def test_request_seeds_are_stable_and_tell_requests_apart():
    assert request_seed(0, "ep|1", 3, 0) == request_seed(0, "ep|1", 3, 0)
    seeds = {request_seed(0, ep, turn, seat) for ep in ("ep|1", "ep|10") for turn in range(4) for seat in (0, 1)}
    assert len(seeds) == 16
    assert all(0 <= s < 2**62 for s in seeds)


def test_an_episodes_dialogue_does_not_depend_on_which_episodes_shared_its_batch(transformers_engine, tmp_path):
    together = play(transformers_engine, JOBS, tmp_path / "together.jsonl", batch_size=3)
    alone = play(transformers_engine, JOBS[::-1], tmp_path / "alone.jsonl", batch_size=1)
    assert together.keys() == alone.keys() == {j.id for j in JOBS}
    for job in JOBS:
        assert together[job.id] == alone[job.id], job.id
    # Two repeats of one cell (seeds 0 and 1) are different samples, not copies.
    assert together[JOBS[0].id] != together[JOBS[1].id]
    assert any(argument for _, argument in together[JOBS[0].id])
