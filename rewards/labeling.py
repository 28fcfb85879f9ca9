"""`sotopia-env label`: episodes in, reward data set out.

Phase 1, per episode (resumable): judge it if an agent has no judge scores (into OUT.judged.jsonl, see
`judge.judge_file`), attribute its score to utterances, and append the raw rows of the whole episode, with
its failures and the settings that made it (`labelled_with`: method, dims, weights, gamma, judge model, prompt
versions), as one line of OUT.raw.jsonl. A rerun skips the episodes whose line has no failures and was made with
these settings, and tries the others again (judge and attribution answers that passed are cached, so only what
failed costs a model call); the latest line of an episode is the one that counts. Phase 2, over everything:
fit the per-dimension min-max statistics (OUT.stats.json) and write OUT (one row per utterance: dialogue state,
utterance, raw and normalised per-dimension labels, scalar label).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sotopia_env import Episode, read_episodes
from sotopia_env.episode import check_unique_ids
from sotopia_env.jsonio import append_jsonl, iter_jsonl, write_json_atomic, write_jsonl_atomic

from .attribution import PROMPT_VERSION as ATTRIBUTION_PROMPT
from .attribution import AttributionConfig, Attributor, Normalizer, UtteranceLabel
from .judge import PROMPT_VERSION as JUDGE_PROMPT
from .judge import Judge, is_judged, judge_file


def latest_records(raw_path: str | Path) -> dict[str, dict[str, Any]]:
    """The last raw record of each episode (a retried episode has one line per attempt)."""
    return {rec["episode_id"]: rec for rec in iter_jsonl(raw_path)}


def labelled_with(config: AttributionConfig, judge: Judge | None, rejudge: bool) -> dict[str, Any]:
    """The settings that make a raw label record (JSON-typed, as it reads back from the file)."""
    return {
        "method": config.method,
        "dims": list(config.dims),
        "weights": list(config.weights) if config.weights is not None else None,
        "gamma": config.gamma,
        "judge_model": judge.model_name if judge is not None else None,
        "rejudge": rejudge,
        "prompt_versions": [JUDGE_PROMPT, ATTRIBUTION_PROMPT],
        "dimension_set": config.dimensions.identity(),
    }


def failures_by_episode(batch: Sequence[Episode], problems: Sequence[str]) -> dict[str, list[str]]:
    """The attributor names each failure "<episode id> <agent>: ...". Match the whole id and the agent, so
    that episode `x|1` never claims a failure of `x|10`."""
    owners = {f"{e.id} {agent}: ": e.id for e in batch for agent in e.agents}
    found: dict[str, list[str]] = {e.id: [] for e in batch}
    for problem in problems:
        owner = next((eid for prefix, eid in owners.items() if problem.startswith(prefix)), None)
        if owner is None:
            raise ValueError(f"attribution failure {problem!r} names no episode and agent of this batch")
        found[owner].append(problem)
    return found


def judge_missing(batch: list[Episode], judge: Judge | None, judged_path: Path) -> list[Episode]:
    """Judge the episodes in which some agent has no scores (never judged, or a judge failed on it), into
    `judged_path` (`judge_file`: what a rerun finds judged there costs nothing)."""
    dims = judge.dimensions if judge is not None else None
    missing = [e for e in batch if not all(is_judged(e, a, dims) if dims else a in e.judge_scores for a in e.agents)]
    if not missing:
        return batch
    if judge is None:
        unjudged = next((e for e in missing if not e.judge_scores), None)
        if unjudged is not None:
            raise ValueError(f"episode {unjudged.id} has no judge scores; pass a judge (--judge SPEC)")
        return batch  # partly judged elsewhere: label the judged agents, report the rest as failures
    judged = {e.id: e for e in judge_file(judge, missing, judged_path, batch_size=len(missing), progress=False)}
    return [judged.get(e.id, e) for e in batch]


def label_episodes(
    episodes_path: str | Path,
    out_path: str | Path,
    judge: Judge | None,
    config: AttributionConfig,
    batch_size: int = 8,
    progress: bool = True,
    rejudge: bool = False,
) -> dict[str, Any]:
    """rejudge: drop the scores episodes come with (e.g. Sotopia's, on imported episodes) and judge them all
    with `judge`; otherwise an agent's existing scores are its G on each dimension."""
    from tqdm import tqdm

    out = Path(out_path)
    raw_path = out.with_suffix(".raw.jsonl")
    cache_dir = out.parent
    episodes = read_episodes(episodes_path)
    check_unique_ids(episodes, episodes_path)
    if rejudge:
        if judge is None:
            raise ValueError("rejudge needs a judge (--judge SPEC)")
        blank = {"judge_scores": {}, "judge_reasoning": {}, "judge_failures": [], "judge_model": ""}
        episodes = [e.model_copy(update=blank) for e in episodes]
    # What makes this run's labels, carried by each raw record: one labelled with other settings (a rerun with
    # --resume-anyway) is labelled again; a record from before this field existed counts as made with these.
    made_with = labelled_with(config, judge, rejudge)
    done = {
        eid
        for eid, rec in latest_records(raw_path).items()
        if not rec.get("failures") and rec.get("labelled_with", made_with) == made_with
    }
    todo = [e for e in episodes if e.id not in done]
    attributor = Attributor(judge.engine if judge else None, config, cache_dir / "attribution_cache.jsonl")
    bar = tqdm(total=len(todo), desc="label", unit="ep", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = judge_missing(todo[start : start + batch_size], judge, out.with_suffix(".judged.jsonl"))
        rows, problems = attributor.label_episodes(batch)
        problems_of = failures_by_episode(batch, problems)
        by_episode: dict[str, list[UtteranceLabel]] = {}
        for r in rows:
            by_episode.setdefault(r.episode_id, []).append(r)
        for e in batch:  # one line per episode, also when it produced no rows, so a rerun knows its outcome
            append_jsonl(
                raw_path,
                {
                    "episode_id": e.id,
                    "labelled_with": made_with,
                    "rows": [asdict(r) for r in by_episode.get(e.id, [])],
                    "failures": e.judge_failures + problems_of[e.id],
                },
            )
        bar.update(len(batch))
    bar.close()

    records = latest_records(raw_path)
    write_jsonl_atomic(raw_path, records.values())  # drop the lines of attempts that a retry replaced
    rows = [UtteranceLabel(**r) for rec in records.values() for r in rec["rows"]]
    all_failures = [f for rec in records.values() for f in rec.get("failures", [])]
    normalizer = Normalizer.fit(rows, config)
    normalizer.apply(rows)
    write_jsonl_atomic(out, (asdict(r) for r in rows))
    stats = {**normalizer.to_json(), "method": config.method, "gamma": config.gamma}
    write_json_atomic(out.with_suffix(".stats.json"), stats)
    return {"episodes": len(episodes), "labelled_now": len(todo), "rows": len(rows), "failures": all_failures}
