"""A dialogue as one growing chat, for trainers whose policy reads its own earlier replies as chat turns (TRL's
`rollout_func`, verl's interactions, SkyRL's text envs).

The opening message is the learner's first observation as every policy here sees it (`build_messages`: the
system prompt, then the whole observation prompt). Each later user message holds only what happened since the
learner last acted: the partner's lines and the closing line ("It is turn 5 of 20 ...") of the new observation.
The learner's own lines are not repeated: the chat already holds them as its assistant turns.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sotopia_env.observation import split_prompt

_REPLY_PROBE = "<<reply>>"  # stands for an assistant reply while reading the template's turn boundaries


def turn_text(previous: Mapping[str, Any], current: Mapping[str, Any]) -> str:
    """The user message a learner reads at its next turn: the dialogue lines of `current` that came after
    `previous` (both observations of the same seat in one episode), except the learner's own, then the
    closing line."""
    before, after = split_prompt(previous["prompt"]), split_prompt(current["prompt"])
    if before is None or after is None:
        raise ValueError("turn_text takes two observations of a sotopia_env env (dicts with its 'prompt' text)")
    if current["seat"] != previous["seat"] or len(after[1]) < len(before[1]):
        raise ValueError("turn_text takes two observations of the same seat in one episode, the earlier one first")
    _, lines, closing = after
    if len(lines) != len(current["history"]):
        raise ValueError(f"observation has {len(lines)} dialogue lines but {len(current['history'])} history entries")
    new = zip(lines[len(before[1]) :], current["history"][len(before[1]) :])
    return "\n".join([line for line, entry in new if entry["speaker"] != current["seat"]] + [closing.strip()])


def turn_ids(tokenizer: Any, text: str) -> list[int]:
    """The token ids the chat template puts between an assistant reply's content and the next reply: the end
    of the assistant turn, a user turn holding `text`, and the generation prompt. Read off the template, so
    any chat template works, not only SmolLM2's."""
    chat = [
        {"role": "system", "content": ""},
        {"role": "user", "content": ""},
        {"role": "assistant", "content": _REPLY_PROBE},
        {"role": "user", "content": text},
    ]
    rendered = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    at = rendered.find(_REPLY_PROBE)
    if at < 0:
        raise ValueError("the chat template dropped the assistant reply; it cannot hold a multi-turn dialogue")
    return list(tokenizer.encode(rendered[at + len(_REPLY_PROBE) :], add_special_tokens=False))
