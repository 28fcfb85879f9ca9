"""The rewards package's commands: `judge`, `label`. Each takes its config (rewards.configs)."""

from __future__ import annotations

from pathlib import Path

from agents.spec import make_engine, parse_spec

from .configs import JudgeConfig, LabelConfig, dimensions_of
from .dimensions import SOTOPIA_EVAL, DimensionSet
from .judge import Judge, judge_file
from .labeling import label_episodes


def judge_from_spec(spec: str, cache_path: str | Path, dimensions: DimensionSet = SOTOPIA_EVAL) -> Judge:
    return Judge(make_engine(parse_spec(spec)), cache_path=cache_path, dimensions=dimensions)


def judge_command(cfg: JudgeConfig) -> int:
    out = Path(cfg.out)
    judged = judge_file(
        lambda: judge_from_spec(cfg.judge, out.parent / "judge_cache.jsonl", dimensions_of(cfg)),
        cfg.episodes,
        out,
        cfg.batch_size,
        dimensions=dimensions_of(cfg),
    )
    failed = sum(bool(e.judge_failures) for e in judged)
    print(
        f"{len(judged)} judged episode(s) -> {out}; {failed} with failures (recorded in judge_failures; "
        "a rerun judges them again)"
    )
    return 0


def label_command(cfg: LabelConfig) -> int:
    attribution = cfg.attribution()
    cache = str(Path(cfg.out).parent / "judge_cache.jsonl")
    judge = judge_from_spec(cfg.judge, cache, attribution.dimensions) if cfg.judge else None
    summary = label_episodes(cfg.episodes, cfg.out, judge, attribution, batch_size=cfg.batch_size, rejudge=cfg.rejudge)
    print(f"{summary['rows']} labelled utterances from {summary['episodes']} episodes -> {cfg.out}")
    if summary["failures"]:
        print(
            f"{len(summary['failures'])} judge/attribution failure(s) (left out): " + "; ".join(summary["failures"][:5])
        )
    return 0
