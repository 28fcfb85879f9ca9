"""The policy protocol the single-agent envs call for the partner, and a scripted policy.

`sotopia_env` stays free of model code: LLM policies live in `agents` and satisfy this protocol.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from .actions import Action, ActionType


@runtime_checkable
class Policy(Protocol):
    """Turns one observation (the env's dict) into an action (a string is a `speak`)."""

    def act(self, observation: dict[str, Any]) -> Any: ...


def act_batch(
    policy: Policy, observations: Sequence[dict[str, Any]], keys: Sequence[tuple[Any, ...]] | None = None
) -> list[Any]:
    """One action per observation, in one call when the policy can batch (LLM policies can).

    keys: one identity per request, e.g. (episode id, turn, seat), passed on to an `act_batch` that takes
    `keys` so that a seeded policy samples per episode and turn, whatever else shares the batch."""
    if not observations:
        return []
    batched = getattr(policy, "act_batch", None)
    if batched is not None:
        takes_keys = keys is not None and "keys" in inspect.signature(batched).parameters
        actions = list(batched(list(observations), keys=list(keys)) if takes_keys else batched(list(observations)))
        if len(actions) != len(observations):
            raise ValueError(
                f"{type(policy).__name__}.act_batch returned {len(actions)} actions for {len(observations)} observations"
            )
        return actions
    return [policy.act(o) for o in observations]


class ScriptedPolicy:
    """Says its lines in order, one per own turn, then leaves (or stays silent).

    Lines may be strings (speech) or `Action`s. The position is read from the observation (how many
    times this seat has acted), so one instance can serve any number of episodes at once.
    """

    model_name = "scripted"

    def __init__(self, lines: Sequence[str | Action] = ("Hello.", "I see.", "Goodbye."), then: str = "leave") -> None:
        if then not in ("leave", "none"):
            raise ValueError(f"then must be 'leave' or 'none', not {then!r}")
        self.lines = list(lines)
        self.then = then

    def act(self, observation: dict[str, Any]) -> Any:
        seat = observation["seat"]
        spoken = sum(1 for h in observation["history"] if h["speaker"] == seat)
        if spoken < len(self.lines):
            return self.lines[spoken]
        return Action(ActionType.leave) if self.then == "leave" else Action(ActionType.none)
