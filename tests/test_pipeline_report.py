"""The main job's report says what its figures show, with named thresholds, and writes report.md with its plots.
Checked on figures written here (the pipeline itself takes minutes: docs/figures.md has its measured runs)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from trainers.pipeline_report import GRPO_CHANGE, RM_LEARNED_PEARSON, verdict, write_report

REPORT = {
    "episodes": 8,
    "judge_failures": 1,
    "labelled_utterances": 90,
    "rm_heldout_mse": 2.5,
    "rm_heldout_pearson": -0.08,
    "heldout_reward_before_grpo": 1.016,
    "heldout_reward_after_grpo": 0.977,
    "grpo_max_kl": 0.04,
    "grpo_rollout": "env (turn credit)",
    "stage_seconds": {"collect": 60.0, "judge": 90.0, "label": 30.0, "train-rm": 80.0, "bc": 40.0, "grpo": 200.0},
}


def test_a_reward_model_that_did_not_learn_is_named_so_with_the_way_to_a_real_judge():
    lines = verdict(REPORT)
    assert "15 of 16 seats (1 failed" in lines[0] and "90 labelled utterances" in lines[1]
    assert (
        f"did not learn from these labels: its held-out Pearson correlation is -0.08, under {RM_LEARNED_PEARSON}"
        in lines[2]
    )
    assert "--judge openai:" in lines[2] and "docs/data.md" in lines[2]
    # -0.039 is within the threshold: no change, and with a reward model that did not learn it means nothing.
    assert (
        "did not change beyond noise, 1.016 -> 0.977 (-0.039" in lines[3]
        and "says nothing about social skill" in lines[3]
    )
    assert "stayed near where it started (largest KL 0.040)" in lines[4]


def test_a_reward_model_that_learned_and_a_reward_that_rose_are_read_as_such():
    report = {**REPORT, "rm_heldout_pearson": 0.62, "heldout_reward_after_grpo": 1.016 + GRPO_CHANGE + 0.5}
    lines = verdict(report)
    assert "learned the labels to a degree: held-out Pearson 0.62" in lines[2]
    assert "the held-out reward rose" in lines[3] and "says nothing" not in lines[3]
    assert "moved far" in verdict({**report, "grpo_max_kl": 0.9})[4]


def test_the_report_holds_the_verdict_the_plots_and_the_view_command(tmp_path):
    judged = [{"judge_scores": {"agent_0": {"goal": 6.0, "believability": 8.0}, "agent_1": {"goal": "n/a"}}}]
    (tmp_path / "episodes.judged.jsonl").write_text("".join(json.dumps(e) + "\n" for e in judged))
    (tmp_path / "grpo").mkdir()
    rows = [{"step": s, "reward_mean": 1.0 + s / 10, "kl": s / 100} for s in (1, 2, 3)]
    (tmp_path / "grpo" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "report").mkdir()
    held = [{"label": 1.0, "prediction": 0.5}, {"label": 3.0, "prediction": 2.0}]
    (tmp_path / "report" / "rm_heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in held))
    lines = write_report(tmp_path, SimpleNamespace(out=str(tmp_path)), REPORT, rm_cfg=None)
    text = (tmp_path / "report.md").read_text()
    assert all(f"- {line}" in text for line in lines) and f"sotopia-env view {tmp_path}" in text
    for name in ("judge_dimensions.png", "rm_heldout.png", "grpo_steps.png", "heldout_reward.png"):
        assert f"(report/{name})" in text and (tmp_path / "report" / name).stat().st_size > 1000
