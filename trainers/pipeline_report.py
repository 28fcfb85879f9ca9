"""The main job's report: what each stage produced, four plots, and a plain reading of the figures.

`write_report(out, ...)` writes OUT/report.md and OUT/report/*.png (the judge's scores per dimension, the reward
model's held-out predictions against their labels, GRPO's reward and KL per step, the held-out reward before and
after GRPO) and returns the verdict's lines. The reading uses named thresholds (below), so it says the same thing
for the same figures; `verdict` is a pure function of the figures, tested on numbers.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import iter_jsonl, write_text_atomic

# A reward model whose held-out Pearson correlation with its labels is under this did not learn them.
RM_LEARNED_PEARSON = 0.3
# GRPO's held-out reward moved by less than this (in the reward's units) did not change beyond noise at these sizes.
GRPO_CHANGE = 0.25
# A largest KL to the starting policy over this means the policy moved far from where it started.
KL_FAR = 0.5
REAL_JUDGE = "--judge openai:gpt-4o@https://api.openai.com/v1 (or any stronger model on a vLLM server)"


def verdict(report: dict[str, Any]) -> list[str]:
    """Plain sentences reading the pipeline's figures (report.json's keys)."""
    lines = []
    episodes, failed = report["episodes"], report["judge_failures"]
    judged = 2 * episodes - failed
    lines.append(
        f"Collected {episodes} episodes of the embedded model playing itself; the judge scored {judged} of "
        f"{2 * episodes} seats" + (f" ({failed} failed: see episodes.judged.jsonl)." if failed else ".")
    )
    lines.append(f"Attribution turned those scores into {report['labelled_utterances']} labelled utterances.")
    pearson = report["rm_heldout_pearson"]
    if pearson is None or not math.isfinite(pearson) or pearson < RM_LEARNED_PEARSON:
        shown = "none" if pearson is None else f"{pearson:.2f}"
        lines.append(
            f"The reward model did not learn from these labels: its held-out Pearson correlation is {shown}, under "
            f"{RM_LEARNED_PEARSON}. With the embedded 135M model as judge that is expected: its scores are close to "
            f"noise. For a reward model that learns, judge with a real model ({REAL_JUDGE}) and collect more "
            "episodes: see docs/data.md, 'Recipe: Sotopia-RL's reward model'."
        )
        rm_learned = False
    else:
        lines.append(
            f"The reward model learned the labels to a degree: held-out Pearson {pearson:.2f} "
            f"(at least {RM_LEARNED_PEARSON}), mean squared error {report['rm_heldout_mse']:.3f}."
        )
        rm_learned = True
    before, after = report["heldout_reward_before_grpo"], report["heldout_reward_after_grpo"]
    change = after - before
    where = report["grpo_rollout"]
    moved = "rose" if change >= GRPO_CHANGE else "fell" if change <= -GRPO_CHANGE else "did not change beyond noise"
    line = (
        f"GRPO ({where}) from the behaviour-cloned adapter: the held-out reward {moved}, {before:.3f} -> "
        f"{after:.3f} ({change:+.3f}; threshold {GRPO_CHANGE})."
    )
    if not rm_learned:
        line += (
            " The reward it optimises is the reward model's, which did not learn, so this says nothing about "
            "social skill; it shows the loop runs end to end."
        )
    lines.append(line)
    kl = report["grpo_max_kl"]
    lines.append(
        f"The policy stayed near where it started (largest KL {kl:.3f})."
        if kl <= KL_FAR
        else f"The policy moved far from where it started (largest KL {kl:.3f}, over {KL_FAR}): lower --grpo-lr."
    )
    return lines


def _plots(out: Path, figures: Path, before: float, after: float) -> list[tuple[str, str]]:
    """The four plots (title, file name); a plot whose data is missing is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(figures / name, dpi=90)
        plt.close(fig)
        made.append((title, name))

    scores: dict[str, list[float]] = {}
    for e in iter_jsonl(out / "episodes.judged.jsonl"):
        for agent_scores in e.get("judge_scores", {}).values():
            for dim, value in agent_scores.items():
                if isinstance(value, (int, float)):
                    scores.setdefault(dim, []).append(float(value))
    if scores:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        dims = sorted(scores)
        ax.bar(dims, [sum(scores[d]) / len(scores[d]) for d in dims], color="#4c72b0")
        ax.set_ylabel("mean score")
        ax.set_title("Judge: mean score per Sotopia-EVAL dimension")
        ax.tick_params(axis="x", rotation=30)
        save(fig, "judge_dimensions.png", "The judge's scores per dimension")
    held = out / "report" / "rm_heldout.jsonl"
    if held.exists():
        rows = list(iter_jsonl(held))
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.scatter([r["label"] for r in rows], [r["prediction"] for r in rows], s=12, alpha=0.7)
        ax.set_xlabel("label")
        ax.set_ylabel("reward model")
        ax.set_title("Reward model on held-out utterances")
        save(fig, "rm_heldout.png", "The reward model's held-out predictions against their labels")
    metrics = list(iter_jsonl(out / "grpo" / "metrics.jsonl"))
    if metrics:
        steps = [m["step"] for m in metrics]
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8, 3.2))
        ax1.plot(steps, [m["reward_mean"] for m in metrics], marker="o")
        ax1.set_title("GRPO: mean reward per step")
        ax1.set_xlabel("step")
        ax2.plot(steps, [m["kl"] for m in metrics], marker="o", color="#c44e52")
        ax2.set_title("KL to the starting policy")
        ax2.set_xlabel("step")
        save(fig, "grpo_steps.png", "GRPO's reward and KL per step")
    fig, ax = plt.subplots(figsize=(3.5, 3.2))
    ax.bar(["before GRPO", "after GRPO"], [before, after], color=["#8c8c8c", "#55a868"])
    ax.set_ylabel("mean reward-model score")
    ax.set_title("Held-out reward")
    save(fig, "heldout_reward.png", "The held-out reward before and after GRPO")
    return made


def heldout_predictions(out: Path, rm_cfg: Any) -> None:
    """The best reward model's scores of its own held-out rows (the split train-rm made), for the scatter plot."""
    from rewards.reward_model import RewardModel
    from sotopia_env.jsonio import write_jsonl_atomic
    from trainers.train_reward_model import load_rows, split_rows

    path = out / "report" / "rm_heldout.jsonl"
    if path.exists():
        return
    _, held = split_rows(load_rows(rm_cfg.data), rm_cfg.heldout_fraction, rm_cfg.seed)
    rm = RewardModel.load(Path(rm_cfg.out) / "best")
    predictions = rm.score([r["prompt"] for r in held], [r["utterance"] for r in held], batch_size=16)
    write_jsonl_atomic(path, [{"label": float(r["label"]), "prediction": p} for r, p in zip(held, predictions)])


def write_report(out: Path, cfg: Any, report: dict[str, Any], rm_cfg: Any) -> list[str]:
    """OUT/report.md with the plots and the verdict; returns the verdict's lines (also printed)."""
    figures = out / "report"
    figures.mkdir(parents=True, exist_ok=True)
    heldout_predictions(out, rm_cfg)
    plots = _plots(out, figures, report["heldout_reward_before_grpo"], report["heldout_reward_after_grpo"])
    reading = verdict(report)
    stages = report["stage_seconds"]
    lines = [
        "# The main job's report",
        "",
        f"`sotopia-env pipeline --out {cfg.out}`: the Sotopia-RL loop in miniature on the embedded model.",
        "",
        "## What it shows",
        "",
        *[f"- {line}" for line in reading],
        "",
        "## What each stage produced",
        "",
        "| stage | output | seconds |",
        "| --- | --- | --- |",
        f"| collect | `episodes.jsonl`: {report['episodes']} episodes | {stages.get('collect', 0)} |",
        f"| judge | `episodes.judged.jsonl`: {report['judge_failures']} failed seats | {stages.get('judge', 0)} |",
        f"| label | `labels.jsonl`: {report['labelled_utterances']} utterances | {stages.get('label', 0)} |",
        f"| train-rm | `rm/best`: held-out Pearson {_num(report['rm_heldout_pearson'])}, MSE "
        f"{_num(report['rm_heldout_mse'])} | {stages.get('train-rm', 0)} |",
        f"| bc | `bc/adapter` | {stages.get('bc', 0)} |",
        f"| grpo | `grpo/adapter`, `grpo/metrics.jsonl` ({report['grpo_rollout']}): held-out "
        f"{report['heldout_reward_before_grpo']:.3f} -> {report['heldout_reward_after_grpo']:.3f}, largest KL "
        f"{report['grpo_max_kl']:.3f} | {stages.get('grpo', 0)} |",
        "",
        "## Plots",
        "",
        *[f"### {title}\n\n![{title}](report/{name})\n" for title, name in plots],
        "## See the dialogues",
        "",
        "```bash",
        f".venv/bin/sotopia-env view {cfg.out}",
        "```",
        "",
    ]
    write_text_atomic(out / "report.md", "\n".join(lines))
    return reading


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and math.isfinite(value) else str(value)
