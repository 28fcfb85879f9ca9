"""GRPO's configuration, apart from the trainer so `sotopia-env grpo --help` and config checks need no torch.
Each field is a `sotopia-env grpo` flag (--field-name); its metadata's help is the flag's help."""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.configs import library_rule
from agents.engine import MODES
from sotopia_env.cli import config_error

SCALES = ("group", "batch", "none")  # --scale-rewards (trainers/grpo_math.py)
LOSS_TYPES = ("grpo", "dapo", "dr_grpo")  # --loss-type (trainers/grpo_math.py)
# Fields a rerun into the same --out may change (sotopia_env.provenance): where the run writes, how often it saves
# and logs, and how it runs the same computation (the rollout engine samples the same distribution; micro-batches
# and the shared prompt pass compute the same loss). Every other field changes what is trained, --steps too: the
# LR schedule decays to it, so extending a run is a different run (--resume-anyway says you mean it).
NOT_COMPARED = (
    "out",
    "save_every",
    "tensorboard",
    "engine",
    "server",
    "vllm_memory",
    "vllm_sleep",
    "rollout_mode",
    "micro_batch",
    "shared_prompt",
    "resume_anyway",
    "keep_adapters",
)


@dataclass
class GRPOConfig:
    reward_model: str = field(default="runs/rm/best", metadata={"help": "a saved RewardModel folder"})
    episodes: str | None = field(
        default=None, metadata={"help": "dialogue states from these episodes; None: roll the env online"}
    )
    prompts: str | None = field(
        default=None, metadata={"help": 'or: a JSONL file of {"prompt": <observation prompt>} records'}
    )
    split: str = field(default="all", metadata={"help": "scenarios for online states and env rollouts"})
    library: str | None = field(
        default=None,
        metadata={
            "help": "a library folder (scenarios.jsonl, characters.jsonl, optional pairings.json) from "
            "generate-tasks or import-sotopia: its --split is used instead of the shipped library's"
        },
    )
    rollout: str = field(
        default="states",
        metadata={
            "help": "states: single-turn GRPO on dialogue states (--episodes, --prompts or scripted); "
            "env: on-policy dialogues in the env, rewards from the env's reward model (see --credit)"
        },
    )
    credit: str = field(
        default="turn",
        metadata={
            "help": "env rollouts: turn (G candidates per learner turn, advantages from their immediate rewards, "
            "one played) or episode (G whole episodes per start, return-to-go per learner turn)"
        },
    )
    partner: str = field(
        default="embedded", metadata={"help": "env rollouts: the partner's policy spec (embedded, scripted, ...)"}
    )
    learner_seat: str = field(
        default="alternate", metadata={"help": "env rollouts: 0, 1, alternate (across episodes) or both (self-play)"}
    )
    max_turns: int = field(default=8, metadata={"help": "env rollouts: the env's turn limit per episode"})
    gamma: float = field(default=1.0, metadata={"help": "episode credit: discount over the learner's later turns"})
    out: str = field(default="runs/grpo")
    base: str = field(default="embedded")
    init_adapter: str | None = field(default=None, metadata={"help": "start from this LoRA (e.g. behaviour cloning's)"})
    engine: str = field(
        default="transformers",
        metadata={
            "help": "rollout engine: transformers (shares the live weights), vllm (in-process) or openai "
            "(a vLLM server, see --server)"
        },
    )
    server: str | None = field(
        default=None,
        metadata={
            "help": "with --engine openai: openai:SERVED_NAME@URL of a vLLM server on --base started with runtime "
            "LoRA loading (sotopia-env serve); each new adapter version is loaded into it from OUT/adapters"
        },
    )
    keep_adapters: int = field(
        default=3,
        metadata={
            "help": "with --engine vllm or openai: adapter versions kept in OUT/adapters and loaded in the engine; "
            "older ones are deleted and unloaded (the one sampling is always kept)"
        },
    )
    vllm_memory: float | None = field(
        default=None,
        metadata={
            "help": "with --engine vllm: the fraction of the GPU's memory vLLM may take (weights, activations, KV "
            "cache); unset: what the training leaves, measured at start (trainers.colocate; 0.25 on CPU)"
        },
    )
    vllm_sleep: bool = field(
        default=True,
        metadata={
            "help": "with --engine vllm: vLLM sleeps during each update (level 1: weights to CPU memory, KV cache "
            "freed) where the installed vLLM has sleep mode (CUDA, ROCm); elsewhere it stays awake (logged once)"
        },
    )
    rollout_mode: str = field(
        default="auto",
        metadata={"help": "transformers engine: generate, static or continuous; auto: static on a GPU, else generate"},
    )
    steps: int = field(default=20)
    prompts_per_step: int = field(default=4, metadata={"help": "B dialogue states per step"})
    group_size: int = field(default=4, metadata={"help": "G samples per state"})
    max_new_tokens: int = field(default=32)
    temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature, training and evaluation; log-probs are taken at it too"}
    )
    top_p: float = field(default=1.0, metadata={"help": "nucleus sampling, training and evaluation alike"})
    max_prompt_tokens: int = field(
        default=512,
        metadata={"help": "token budget of a dialogue state; beyond it the oldest dialogue lines are left out"},
    )
    lr: float = field(default=5e-5)
    warmup_steps: int = field(default=2)
    updates_per_batch: int = field(default=1, metadata={"help": ">1 reuses each batch: the clipped ratio then matters"})
    micro_batch: int = field(
        default=8, metadata={"help": "sequences per forward/backward (gradient accumulation across them); whole groups"}
    )
    shared_prompt: bool = field(
        default=True,
        metadata={"help": "run each state's prompt once per group (grouped_logprobs); False: once per sample"},
    )
    scale_rewards: str = field(
        default="group",
        metadata={
            "help": "advantage A from the rewards r of a group (TRL's names): group, (r - mean) / std of the group; "
            "batch, (r - mean) / std of the step's rewards; none, r - mean (Dr. GRPO)"
        },
    )
    loss_type: str = field(
        default="grpo",
        metadata={
            "help": "how token losses become the loss (TRL's names): grpo, mean per sequence then over sequences; "
            "dapo, mean over the step's trained tokens; dr_grpo, sum over tokens / (sequences x max_new_tokens)"
        },
    )
    tis_cap: float | None = field(
        default=None,
        metadata={
            "help": "truncated importance sampling: weight each token's surrogate by min(p_trainer / p_sampler, CAP) "
            "to correct a sampler that differs from the trained policy (vLLM kernels, bf16); unset: off"
        },
    )
    nonfinite_rewards: str = field(
        default="stop",
        metadata={
            "help": "a reward that is not a finite number: stop (an error naming its source) or drop (its group "
            "is left out of the update and counted in the step's groups_dropped_nonfinite)"
        },
    )
    clip_eps: float = field(default=0.2)
    kl_coef: float = field(default=0.04)
    weight_decay: float = field(
        default=0.0,
        metadata={
            "help": "AdamW weight decay on the LoRA weights; 0 by default: decay pulls an init adapter toward the "
            "base model, away from the KL reference (the init adapter itself)"
        },
    )
    max_grad_norm: float = field(default=1.0)
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_layers: int | None = field(default=None, metadata={"help": "LoRA on the top N layers only (None: all)"})
    heldout_states: int = field(
        default=16, metadata={"help": "states kept out of training, for the before/after reward"}
    )
    eval_samples: int = field(default=2, metadata={"help": "samples per held-out state in evaluations"})
    save_every: int = field(default=10)
    seed: int = field(default=0)
    tensorboard: bool = field(default=True)
    resume_anyway: bool = field(
        default=False,
        metadata={
            "help": "continue an --out whose OUT/config.json records other settings (refused otherwise; the "
            "fields in NOT_COMPARED, such as --steps' neighbours --save-every and the engine, may always change)"
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field. Runs at construction and again when training starts,
        before any model loads, so a bad flag costs nothing (G = 1 would give NaN advantages)."""
        rules = [
            library_rule(self.library),
            ("steps", self.steps >= 1, "must be at least 1"),
            ("prompts_per_step", self.prompts_per_step >= 1, "must be at least 1 dialogue state per step"),
            (
                "group_size",
                self.group_size >= 2,
                "must be at least 2: each sample's advantage compares it with the other samples of its state",
            ),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            (
                "temperature",
                self.temperature > 0,
                "must be > 0: log-probs are taken at it (logits / T); for near-greedy sampling use e.g. 0.1",
            ),
            ("top_p", 0 < self.top_p <= 1, "must be in (0, 1]; 1 samples from the whole distribution"),
            ("max_prompt_tokens", self.max_prompt_tokens >= 1, "must be at least 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("warmup_steps", self.warmup_steps >= 0, "must be 0 (no warm-up) or more"),
            ("updates_per_batch", self.updates_per_batch >= 1, "must be at least 1"),
            ("micro_batch", self.micro_batch >= 1, "must be at least 1 sequence"),
            ("clip_eps", self.clip_eps > 0, "must be > 0 (0.2 is usual)"),
            ("scale_rewards", self.scale_rewards in SCALES, f"must be one of {', '.join(SCALES)}"),
            ("loss_type", self.loss_type in LOSS_TYPES, f"must be one of {', '.join(LOSS_TYPES)}"),
            ("tis_cap", self.tis_cap is None or self.tis_cap >= 1, "must be at least 1 (2 is usual), or unset"),
            ("nonfinite_rewards", self.nonfinite_rewards in ("stop", "drop"), "must be 'stop' or 'drop'"),
            ("weight_decay", self.weight_decay >= 0, "must be 0 (the default for LoRA) or more"),
            ("kl_coef", self.kl_coef >= 0, "must be 0 (no KL penalty) or more"),
            ("max_grad_norm", self.max_grad_norm > 0, "must be > 0"),
            ("lora_r", self.lora_r >= 1, "must be at least 1"),
            (
                "lora_r",
                self.engine != "vllm" or self.lora_r <= 512,
                "must be at most 512 with --engine vllm (vLLM's largest max_lora_rank)",
            ),
            ("lora_alpha", self.lora_alpha > 0, "must be > 0"),
            (
                "lora_layers",
                self.lora_layers is None or self.lora_layers >= 1,
                "must be at least 1, or unset for all layers",
            ),
            (
                "heldout_states",
                self.heldout_states >= 1,
                "must be at least 1: the held-out states measure the reward before and after training",
            ),
            ("eval_samples", self.eval_samples >= 1, "must be at least 1 sample per held-out state"),
            ("save_every", self.save_every >= 1, "must be at least 1 step"),
            ("keep_adapters", self.keep_adapters >= 1, "must be at least 1: the version sampling is always kept"),
            (
                "vllm_memory",
                self.vllm_memory is None or 0 < self.vllm_memory <= 1,
                "must be a fraction of the GPU's memory in (0, 1], or unset to derive it from the training's needs",
            ),
            ("engine", self.engine in ("transformers", "vllm", "openai"), "must be 'transformers', 'vllm' or 'openai'"),
            (
                "server",
                (self.engine == "openai") == bool(self.server)
                and (not self.server or self.server.startswith("openai:")),
                "must be an openai:SERVED_NAME@URL spec, given exactly when --engine is openai",
            ),
            ("rollout", self.rollout in ("states", "env"), "must be 'states' or 'env'"),
            ("credit", self.credit in ("turn", "episode"), "must be 'turn' or 'episode'"),
            ("learner_seat", self.learner_seat in ("0", "1", "alternate", "both"), "must be 0, 1, alternate or both"),
            ("max_turns", self.max_turns >= 2, "must be at least 2 (one turn per seat)"),
            ("gamma", 0 <= self.gamma <= 1, "must be in [0, 1]"),
            (
                "rollout",
                self.rollout == "states" or not (self.prompts or self.episodes),
                "is 'env': the env plays its own dialogues; --prompts and --episodes are for --rollout states",
            ),
            ("rollout_mode", self.rollout_mode in ("auto", *MODES), f"must be one of auto, {', '.join(MODES)}"),
            (
                "prompts",
                not (self.prompts and self.episodes),
                f"--prompts and --episodes ({self.episodes!r}) both give the training states; give only one",
            ),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)
