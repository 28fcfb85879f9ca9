"""`sotopia-env label`: episodes in, reward data set out.

Phase 1, per episode (resumable): judge it if it has no judge scores, attribute its score to utterances,
and append the raw rows of the whole episode as one line of OUT.raw.jsonl (episodes already there are
skipped on a rerun; judge and attribution answers are cached too). Phase 2, over everything: fit the
per-dimension min-max statistics (OUT.stats.json) and write OUT (one row per utterance: dialogue state,
utterance, raw and normalised per-dimension labels, scalar label).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sotopia_env import Episode, read_episodes
from sotopia_env.episode import append_jsonl, iter_jsonl, write_jsonl_atomic

from .attribution import AttributionConfig, Attributor, Normalizer, UtteranceLabel
from .judge import Judge


def label_episodes(
    episodes_path: str | Path,
    out_path: str | Path,
    judge: Judge | None,
    config: AttributionConfig,
    batch_size: int = 8,
    progress: bool = True,
) -> dict[str, Any]:
    from tqdm import tqdm

    out = Path(out_path)
    raw_path = out.with_suffix(".raw.jsonl")
    cache_dir = out.parent
    episodes = read_episodes(episodes_path)
    done = {r["episode_id"] for r in iter_jsonl(raw_path)}
    todo = [e for e in episodes if e.id not in done]
    attributor = Attributor(judge.engine if judge else None, config, cache_dir / "attribution_cache.jsonl")
    failures: list[str] = []
    bar = tqdm(total=len(todo), desc="label", unit="ep", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch: list[Episode] = todo[start : start + batch_size]
        unjudged = [e for e in batch if not e.judge_scores]
        if unjudged:
            if judge is None:
                raise ValueError(f"episode {unjudged[0].id} has no judge scores; pass a judge (--judge SPEC)")
            judged = {e.id: e for e in judge.judge_episodes(unjudged)}
            batch = [judged.get(e.id, e) for e in batch]
        rows, problems = attributor.label_episodes(batch)
        failures += problems + [f for e in batch for f in e.judge_failures]
        by_episode: dict[str, list[UtteranceLabel]] = {}
        for r in rows:
            by_episode.setdefault(r.episode_id, []).append(r)
        for e in batch:  # one line per episode, also when it produced no rows, so a rerun skips it
            append_jsonl(raw_path, {"episode_id": e.id, "rows": [asdict(r) for r in by_episode.get(e.id, [])],
                                    "failures": [p for p in problems if p.startswith(e.id)] + e.judge_failures})
        bar.update(len(batch))
    bar.close()

    rows = [UtteranceLabel(**r) for rec in iter_jsonl(raw_path) for r in rec["rows"]]
    all_failures = [f for rec in iter_jsonl(raw_path) for f in rec.get("failures", [])]
    normalizer = Normalizer.fit(rows, config)
    normalizer.apply(rows)
    write_jsonl_atomic(out, (asdict(r) for r in rows))
    stats = {**normalizer.to_json(), "method": config.method, "gamma": config.gamma}
    out.with_suffix(".stats.json").write_text(json.dumps(stats, indent=1))
    return {"episodes": len(episodes), "labelled_now": len(todo), "rows": len(rows), "failures": all_failures}
