"""Sotopia's action types, parsing of what agents hand to `env.step`, and the text charset.

A plain string is a `speak`. A structured action is an `Action`, or a dict
`{"action_type": "leave" | 4, "argument": "..."}` as sampled from the env's action space.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from typing import Any

import numpy as np


class ActionType(IntEnum):
    """Sotopia's action types; the integer is the index in the action space's `Discrete(5)`."""

    speak = 0
    non_verbal = 1  # "non-verbal communication" in Sotopia
    action = 2
    leave = 3
    none = 4

    @property
    def sotopia_name(self) -> str:
        return "non-verbal communication" if self is ActionType.non_verbal else self.name

    @classmethod
    def parse(cls, value: Any) -> ActionType:
        if isinstance(value, ActionType):
            return value
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            if 0 <= int(value) < len(cls):
                return cls(int(value))
            raise ValueError(f"action type index {value} is out of range 0..{len(cls) - 1}")
        if isinstance(value, str):
            key = value.strip().lower().replace("-", "_").replace(" ", "_")
            key = {"non_verbal_communication": "non_verbal"}.get(key, key)
            if key in cls.__members__:
                return cls[key]
        names = ", ".join(repr(t.sotopia_name) for t in cls)
        raise ValueError(f"unknown action type {value!r}; use one of {names}")


# The one definition of speech: the action types the partner perceives. SPEECH_NAMES is the same set as
# episode records spell it (`Turn.action_type`).
SPEECH_TYPES = (ActionType.speak, ActionType.non_verbal, ActionType.action)
SPEECH_NAMES = frozenset(t.sotopia_name for t in SPEECH_TYPES)
SOTOPIA_NAMES = {t: t.sotopia_name for t in ActionType}
# Members as module constants for the per-step paths (an Enum class attribute is a Python-level lookup).
_SPEAK = ActionType.speak
_NO_ARGUMENT = (ActionType.leave, ActionType.none)


@dataclass(frozen=True)
class Action:
    """What an agent does on its turn."""

    action_type: ActionType
    argument: str = ""
    repairs: tuple[str, ...] = ()  # what the agent fixed in its model's output; the env records it

    @property
    def is_speech(self) -> bool:
        """True for actions the partner perceives (speak, non-verbal communication, action)."""
        return self.action_type in SPEECH_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {"action_type": self.action_type.sotopia_name, "argument": self.argument}

    def render(self, speaker: str) -> str:
        """One line of dialogue as the other characters perceive it."""
        if self.action_type is _SPEAK:
            return f'{speaker} said: "{self.argument}"'
        if self.action_type is ActionType.non_verbal:
            return f"{speaker} [non-verbal communication]: {self.argument}"
        if self.action_type is ActionType.action:
            return f"{speaker} [action]: {self.argument}"
        if self.action_type is ActionType.leave:
            return f"{speaker} left the conversation."
        return f"{speaker} did nothing."


_new_object = object.__new__


def _speech(argument: str) -> Action:
    """`Action(ActionType.speak, argument)`, the same instance field for field, without the frozen dataclass's
    `__init__`: its three `object.__setattr__` calls were most of the cost of parsing a plain utterance."""
    action = _new_object(Action)
    action.__dict__.update(action_type=_SPEAK, argument=argument, repairs=())
    return action


REPLACEMENT_CHAR = "\ufffd"


@cache
def text_charset() -> frozenset[str]:
    """Every character an observation or action string may hold.

    gymnasium's `Text` defaults to ASCII letters and digits, which real dialogue breaks at once. We use
    all printable characters of the Basic Multilingual Plane plus the emoji blocks, and newline/tab; any
    other character in an utterance is replaced by U+FFFD on the way in (and the repair recorded).
    """
    chars = {chr(c) for c in range(0x20, 0x10000) if not 0xD800 <= c <= 0xDFFF and chr(c).isprintable()}
    chars |= {chr(c) for c in range(0x1F000, 0x1FB00) if chr(c).isprintable()}
    chars |= {"\n", "\t"}
    return frozenset(chars)


def sanitize_text(text: str) -> tuple[str, int]:
    """(text with characters outside `text_charset` replaced by U+FFFD, how many were replaced)."""
    if text.isascii() and text.isprintable():  # fast path: printable ASCII is all in the charset
        return text, 0
    charset = text_charset()
    if all(c in charset for c in text):
        return text, 0
    out = [c if c in charset else REPLACEMENT_CHAR for c in text]
    return "".join(out), sum(1 for a, b in zip(out, text) if a != b)


def parse_action(agent: str, raw: Any, max_chars: int) -> tuple[Action, list[str]]:
    """Turn what a caller handed to `step` into an `Action`, plus notes on what was repaired.

    Raises ValueError/TypeError with a message naming the agent when the input cannot be used.
    """
    if type(raw) is str and len(raw) <= max_chars and raw.strip() and raw.isascii() and raw.isprintable():
        # The common case: a plain utterance that every rule below would pass unchanged (within the limit,
        # not blank, printable ASCII, so nothing to replace).
        return _speech(raw), []
    notes: list[str] = []
    if isinstance(raw, Action):
        action_type, argument = raw.action_type, raw.argument
        notes += raw.repairs
    elif isinstance(raw, str):
        action_type, argument = ActionType.speak, raw
    elif isinstance(raw, dict):
        unknown = set(raw) - {"action_type", "argument"}
        if unknown or "action_type" not in raw:
            raise ValueError(
                f"agent {agent!r}: an action dict needs 'action_type' and optionally 'argument', got keys {sorted(raw)}"
            )
        try:
            action_type = ActionType.parse(raw["action_type"])
        except ValueError as exc:
            raise ValueError(f"agent {agent!r}: {exc}") from None
        argument = raw.get("argument", "")
    elif raw is None:
        action_type, argument = ActionType.none, ""
    else:
        raise TypeError(
            f"agent {agent!r}: an action must be a string (speech), an Action or a dict with "
            f"'action_type' and 'argument', not {type(raw).__name__}"
        )
    if not isinstance(argument, str):
        raise TypeError(f"agent {agent!r}: the action's argument must be a string, not {type(argument).__name__}")
    if len(argument) > max_chars:
        raise ValueError(
            f"agent {agent!r}: utterance of {len(argument)} characters is over the limit of {max_chars}; "
            "shorten it or raise max_utterance_chars"
        )
    argument, replaced = sanitize_text(argument)
    if replaced:
        notes.append(f"replaced {replaced} unsupported character(s) with U+FFFD")
    if action_type in SPEECH_TYPES and not argument.strip():
        notes.append(f"empty {action_type.sotopia_name} treated as none")
        action_type, argument = ActionType.none, ""
    if action_type in _NO_ARGUMENT:
        argument = ""
    return Action(action_type, argument), notes
