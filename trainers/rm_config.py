"""Reward-model training's configuration, apart from the trainer so `sotopia-env train-rm --help` needs no
torch. Each field is a `sotopia-env train-rm` flag (--field-name)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sotopia_env.cli import config_error

# Fields a rerun into the same --out may change (sotopia_env.provenance): where it writes and when it stops (a
# time limit, the patience of early stopping); the steps it trains are the same. The rest decides what is learned.
NOT_COMPARED = ("out", "max_minutes", "patience", "resume_anyway")


@dataclass
class RMTrainConfig:
    data: str = field(default="runs/labels.jsonl")
    out: str = field(default="runs/rm")
    base: str = field(default="embedded")
    epochs: int = field(default=3)
    batch_size: int = field(default=8)
    lr: float = field(default=3e-4)
    heldout_fraction: float = field(default=0.2)
    eval_every: int = field(default=20, metadata={"help": "steps"})
    patience: int = field(default=3, metadata={"help": "evaluations without held-out improvement before stopping"})
    max_length: int = field(default=256)
    lora_r: int = field(default=8)
    lora_layers: int | None = field(default=None)
    seed: int = field(default=0)
    max_minutes: float | None = field(default=None, metadata={"help": "stop (keeping the best so far) after this long"})
    resume_anyway: bool = field(
        default=False,
        metadata={"help": "continue an --out whose OUT/train_config.json records other settings (refused otherwise)"},
    )

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before the data is read or the model loads."""
        rules = [
            ("epochs", self.epochs >= 1, "must be at least 1"),
            ("batch_size", self.batch_size >= 1, "must be at least 1"),
            ("lr", self.lr > 0, "must be > 0"),
            (
                "heldout_fraction",
                0 < self.heldout_fraction < 1,
                "must be in (0, 1): the held-out episodes choose the best adapter and stop training early",
            ),
            ("eval_every", self.eval_every >= 1, "must be at least 1 step"),
            ("patience", self.patience >= 1, "must be at least 1 evaluation"),
            ("max_length", self.max_length >= 2, "must be at least 2 tokens"),
            ("lora_r", self.lora_r >= 1, "must be at least 1"),
            (
                "lora_layers",
                self.lora_layers is None or self.lora_layers >= 1,
                "must be at least 1, or unset for all layers",
            ),
            (
                "max_minutes",
                self.max_minutes is None or self.max_minutes > 0,
                "must be > 0, or unset for no time limit",
            ),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)
