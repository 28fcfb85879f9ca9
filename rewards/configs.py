"""Configs of the rewards package's commands (`judge`, `label`). Torch-free, so `sotopia-env CMD --help`
and the checks below run before any model loads; each field is a --flag."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sotopia_env.cli import config_error

if TYPE_CHECKING:
    from .attribution import AttributionConfig
    from .dimensions import DimensionSet


def dimensions_of(cfg: JudgeConfig | LabelConfig) -> DimensionSet:
    """The dimension set a config's --dimensions names; a file that is missing or malformed is a ValueError
    naming the flag (rewards.dimensions is torch-free: checked before any model loads)."""
    from .dimensions import dimension_set

    try:
        return dimension_set(cfg.dimensions)
    except (OSError, ValueError) as exc:
        raise config_error(cfg, "dimensions", f"must be a dimension set file ({exc})") from None


@dataclass
class JudgeConfig:
    episodes: str = field(metadata={"help": "episodes JSONL to judge"})
    out: str = field(metadata={"help": "judged episodes JSONL"})
    judge: str = field(default="vllm:embedded", metadata={"help": "judge model spec; use a strong model"})
    batch_size: int = field(default=16)
    resume_anyway: bool = field(
        default=False,
        metadata={
            "help": "continue an --out whose OUT.settings.json (beside OUT) records other settings (refused otherwise)"
        },
    )
    dimensions: str | None = field(
        default=None,
        metadata={"help": "dimension set JSON file (name, range, rubric per dimension); default: Sotopia-EVAL's seven"},
    )

    def validate(self) -> None:
        if self.batch_size < 1:
            raise config_error(self, "batch_size", "must be at least 1 episode")
        dimensions_of(self)


@dataclass
class LabelConfig:
    episodes: str = field(metadata={"help": "episodes JSONL"})
    out: str = field(metadata={"help": "reward data set JSONL (also writes OUT.raw.jsonl and OUT.stats.json)"})
    judge: str = field(
        default="embedded", metadata={"help": "policy-style spec of the judge model; use a strong model"}
    )
    method: str = field(default="direct", metadata={"help": "direct, scaled, singular, uniform or discounting"})
    dims: str | None = field(
        default=None,
        metadata={
            "help": "dimensions to aggregate, comma-separated (default: goal,relationship,knowledge of Sotopia-EVAL; "
            "every dimension of a --dimensions set)"
        },
    )
    weights: str | None = field(
        default=None, metadata={"help": "comma-separated weights, one per dimension (default: equal)"}
    )
    gamma: float = field(default=0.9, metadata={"help": "discount for the discounting method"})
    batch_size: int = field(default=8)
    rejudge: bool = field(
        default=False,
        metadata={
            "help": "judge every episode again with --judge; by default scores an episode already has (e.g. "
            "Sotopia's GPT-4 scores on imported episodes) are kept as each dimension's G"
        },
    )
    resume_anyway: bool = field(
        default=False,
        metadata={
            "help": "continue an --out whose OUT.settings.json records other settings (refused otherwise); "
            "episodes labelled with other settings are labelled again"
        },
    )
    dimensions: str | None = field(
        default=None,
        metadata={"help": "dimension set JSON file the judge scores and --dims name; default: Sotopia-EVAL's seven"},
    )

    def attribution(self) -> AttributionConfig:
        """The attribution these flags describe; raises a ValueError for an unknown method or dimension, or
        weights that do not match the dimensions."""
        from .attribution import DEFAULT_DIMS, AttributionConfig

        dimensions = dimensions_of(self)
        if self.dims is not None:
            dims = tuple(d.strip() for d in self.dims.split(",") if d.strip())
        else:
            dims = DEFAULT_DIMS if set(DEFAULT_DIMS) <= set(dimensions.names) else dimensions.names
        try:
            weights = tuple(float(w) for w in self.weights.split(",")) if self.weights else None
        except ValueError:
            raise config_error(self, "weights", "must be numbers, comma-separated") from None
        try:
            return AttributionConfig(
                method=self.method, dims=dims, weights=weights, gamma=self.gamma, dimensions=dimensions
            )
        except ValueError as exc:
            raise ValueError(f"{exc} (set --method, --dims, --weights or --gamma)") from None

    def validate(self) -> None:
        if self.batch_size < 1:
            raise config_error(self, "batch_size", "must be at least 1")
        self.attribution()


@dataclass
class SotopiaRLExportConfig:
    out: str = field(metadata={"help": "folder for reward_model.json and grpo.json (Sotopia-RL's formats)"})
    labels: str | None = field(default=None, metadata={"help": "`sotopia-env label` output -> reward_model.json"})
    episodes: str | None = field(default=None, metadata={"help": "episodes JSONL -> grpo.json (dialogue states)"})
    state_key: str = field(default="input", metadata={"help": "reward-model state field: input or instruction"})

    def validate(self) -> None:
        if not self.labels and not self.episodes:
            raise config_error(self, "labels", "give --labels, --episodes or both")
        if self.state_key not in ("input", "instruction"):
            raise config_error(self, "state_key", "must be input or instruction (Sotopia-RL uses both)")
