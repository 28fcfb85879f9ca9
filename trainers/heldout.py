"""Held out means whole scenarios kept out of training, the same way in every GRPO mode: offline states and
on-policy dialogues in the env alike. A seeded fifth of a split's scenarios (at least one) is held out, so no
held-out state or dialogue shares a scenario, and so no dialogue prefix, with anything trained on."""

from __future__ import annotations

import random
from collections.abc import Iterable


def split_scenarios(ids: Iterable[str], seed: int, what: str = "the split") -> tuple[list[str], list[str]]:
    """(training, held-out) scenario ids: a seeded fifth of them, at least one, held out."""
    ids = sorted(set(ids))
    if len(ids) < 2:
        raise ValueError(f"{what} has {len(ids)} scenario(s); training holds whole scenarios out: need 2 or more")
    random.Random(seed).shuffle(ids)
    held = max(1, len(ids) // 5)
    return ids[held:], ids[:held]
