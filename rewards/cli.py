"""The rewards package's commands: `judge`, `label`. Each takes its config (rewards.configs)."""

from __future__ import annotations

from pathlib import Path

from agents.spec import make_engine, parse_spec

from .configs import JudgeConfig, LabelConfig
from .judge import Judge
from .labeling import label_episodes


def judge_from_spec(spec: str, cache_path: str | Path) -> Judge:
    return Judge(make_engine(parse_spec(spec)), cache_path=cache_path)


def judge_command(cfg: JudgeConfig) -> int:
    from sotopia_env import read_episodes
    from sotopia_env.episode import episode_ids, write_episode

    out = Path(cfg.out)
    done = episode_ids(out)
    todo = [e for e in read_episodes(cfg.episodes) if e.id not in done]
    judge = judge_from_spec(cfg.judge, out.parent / "judge_cache.jsonl")
    failed = 0
    for episode in judge.judge_in_batches(todo, cfg.batch_size):
        failed += bool(episode.judge_failures)
        write_episode(out, episode)
    print(f"judged {len(todo)} episode(s) ({failed} with failures, recorded in judge_failures) -> {out}")
    return 0


def label_command(cfg: LabelConfig) -> int:
    judge = judge_from_spec(cfg.judge, str(Path(cfg.out).parent / "judge_cache.jsonl")) if cfg.judge else None
    summary = label_episodes(cfg.episodes, cfg.out, judge, cfg.attribution(), batch_size=cfg.batch_size)
    print(f"{summary['rows']} labelled utterances from {summary['episodes']} episodes -> {cfg.out}")
    if summary["failures"]:
        print(
            f"{len(summary['failures'])} judge/attribution failure(s) (left out): " + "; ".join(summary["failures"][:5])
        )
    return 0
