"""Sotopia-EVAL judge, utterance attribution, labelling and the learned reward model.

`from rewards import Judge, RewardModel` works; each is imported on first use, so `import rewards` does
not pay for torch (the reward model) or the engine stack (the judge) until one is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .judge import Judge
    from .reward_model import RewardModel, RewardModelConfig

__all__ = ["Judge", "RewardModel", "RewardModelConfig"]
_HOME = {"Judge": ".judge", "RewardModel": ".reward_model", "RewardModelConfig": ".reward_model"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'rewards' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name], __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value
