"""The rewards package's commands: `judge`, `label`. Each takes its config (rewards.configs)."""

from __future__ import annotations

from pathlib import Path

from agents.spec import make_engine, parse_spec
from sotopia_env.provenance import check_same_settings, settings_beside

from .configs import JudgeConfig, LabelConfig, dimensions_of
from .dimensions import SOTOPIA_EVAL, DimensionSet
from .judge import PROMPT_VERSION as JUDGE_PROMPT
from .judge import Judge, judge_file
from .labeling import label_episodes, labelled_with


def judge_from_spec(spec: str, cache_path: str | Path, dimensions: DimensionSet = SOTOPIA_EVAL) -> Judge:
    return Judge(make_engine(parse_spec(spec)), cache_path=cache_path, dimensions=dimensions)


def judge_command(cfg: JudgeConfig) -> int:
    out = Path(cfg.out)
    # Compared on a rerun into OUT: the judge and its prompt. The input file may grow, the batch size is speed.
    dimensions = dimensions_of(cfg)
    settings = {"judge": cfg.judge, "prompt_version": JUDGE_PROMPT, "dimension_set": dimensions.identity()}
    check_same_settings(out, settings_beside(out), settings, override=cfg.resume_anyway)
    judged = judge_file(
        lambda: judge_from_spec(cfg.judge, out.parent / "judge_cache.jsonl", dimensions),
        cfg.episodes,
        out,
        cfg.batch_size,
        dimensions=dimensions,
    )
    failed = sum(bool(e.judge_failures) for e in judged)
    print(
        f"{len(judged)} judged episode(s) -> {out}; {failed} with failures (recorded in judge_failures; "
        "a rerun judges them again)"
    )
    return 0


def label_command(cfg: LabelConfig) -> int:
    out = Path(cfg.out)
    attribution = cfg.attribution()
    # Compared on a rerun into OUT: what makes a label (attribution, dimension set, judge, prompts). The input file
    # may grow.
    settings = {**labelled_with(attribution, None, cfg.rejudge), "judge": cfg.judge}
    check_same_settings(
        out, settings_beside(out), settings, override=cfg.resume_anyway, records=out.with_suffix(".raw.jsonl")
    )
    judge = (
        judge_from_spec(cfg.judge, str(out.parent / "judge_cache.jsonl"), attribution.dimensions) if cfg.judge else None
    )
    summary = label_episodes(cfg.episodes, cfg.out, judge, attribution, batch_size=cfg.batch_size, rejudge=cfg.rejudge)
    print(f"{summary['rows']} labelled utterances from {summary['episodes']} episodes -> {cfg.out}")
    if summary["failures"]:
        print(
            f"{len(summary['failures'])} judge/attribution failure(s) (left out): " + "; ".join(summary["failures"][:5])
        )
    return 0
