"""Behaviour cloning's configuration, apart from the trainer so `sotopia-env bc --help` and config checks
need no torch. Each field is a `sotopia-env bc` flag (--field-name)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sotopia_env.cli import config_error

# Fields a rerun into the same --out may change (sotopia_env.provenance): where it writes and how often it saves.
# The rest decides what is learned (--epochs too: the LR decays to the last step).
NOT_COMPARED = ("out", "save_every", "resume_anyway")


@dataclass
class BCConfig:
    episodes: str = field(default="runs/episodes.jsonl")
    out: str = field(default="runs/bc")
    base: str = field(default="embedded")
    agents: str = field(default="all", metadata={"help": "whose turns to learn from: all, agent_0 or agent_1"})
    top_fraction: float | None = field(
        default=None,
        metadata={"help": "self-reinforcement: keep the top fraction per scenario by goal (Sotopia-π: 0.2)"},
    )
    models: list[str] = field(
        default_factory=list,
        metadata={"help": "learn only from seats played by this model (its agent_models entry, e.g. gpt-4)"},
    )
    epochs: int = field(default=2)
    batch_size: int = field(default=8)
    lr: float = field(default=2e-4)
    max_length: int = field(default=512)
    lora_r: int = field(default=16)
    lora_alpha: int = field(default=32)
    lora_layers: int | None = field(default=None)
    seed: int = field(default=0)
    save_every: int = field(default=50, metadata={"help": "steps"})
    resume_anyway: bool = field(
        default=False,
        metadata={"help": "continue an --out whose OUT/config.json records other settings (refused otherwise)"},
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before any episode is read or model loads."""
        top = self.top_fraction
        rules = [
            ("agents", self.agents in ("all", "agent_0", "agent_1"), "must be all, agent_0 or agent_1"),
            (
                "top_fraction",
                top is None or 0 < top <= 1,
                "must be in (0, 1] (Sotopia-π keeps 0.2 per scenario), or unset to learn from every turn",
            ),
            (
                "agents",
                top is None or self.agents == "all",
                "cannot be combined with --top-fraction, which keeps the best (episode, agent) pairs of both seats",
            ),
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("lr", self.lr > 0, "must be > 0"),
            ("max_length", self.max_length >= 2, "must be at least 2 tokens (half at most go to the reply)"),
            ("lora_r", self.lora_r >= 1, "must be at least 1"),
            ("lora_alpha", self.lora_alpha > 0, "must be > 0"),
            (
                "lora_layers",
                self.lora_layers is None or self.lora_layers >= 1,
                "must be at least 1, or unset for all layers",
            ),
            ("save_every", self.save_every >= 1, "must be at least 1 step"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)
