"""One way a dialogue state becomes token ids, for every reader: the engines, the reward model, BC, GRPO.

A state is a chat (system prompt + the observation prompt, and for the reward model and BC also the reply).
The observation prompt has three parts (`sotopia_env.observation.split_prompt`): a header (scenario, own
character, partner, secret, goal), the dialogue lines, and a closing line ("It is turn 7 of 20 ..."). When
the chat is longer than the reader's token budget, the oldest dialogue lines are left out first, with a
marker saying how many, then the header's profile details; never the system turn, the goal or the closing
line, which cutting token ids from the left would lose first. Counting is in the reading model's tokens.

A prompt for generation has one budget rule (`prompt_budget`, applied by `render_prompts` for every engine):
the engine's `max_prompt_tokens`, and never more than the model's context leaves after the request's
`max_new_tokens`. vLLM (in-process or served) does not refuse a prompt that leaves too little room: it ends
the answer where the context ends, so a judge's JSON comes back cut short or empty. Fitting the prompt
first, or refusing it with both sizes named, means an answer is only ever cut by max_new_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sotopia_env.observation import compact_header, split_prompt

from .models import chat_token_ids

Messages = list[dict[str, str]]


RAISE_BUDGET = "raise the budget (max_prompt_tokens / max_length)"


class PromptTooLong(ValueError):
    """A conversation that cannot be fitted to its budget. `index`: its place in the batch given to
    `render_prompts`, so a caller can set that one aside and send the others; `reason`: the message without
    the batch position."""

    def __init__(self, message: str, index: int = 0, reason: str | None = None) -> None:
        super().__init__(message)
        self.index, self.reason = index, reason or message


@dataclass(frozen=True)
class RenderedChat:
    ids: list[int]  # prompt ids, then (when a reply was given) the reply's ids
    prompt_length: int  # how many of `ids` are the prompt (the generation prompt included)
    lines_left_out: int  # dialogue lines dropped to fit the budget


def left_out_marker(count: int) -> str:
    return f"({count} earlier line{'s' if count != 1 else ''} left out)"


def _with_recent_lines(messages: Messages, index: int, parts: tuple[str, list[str], str], keep: int) -> Messages:
    header, lines, footer = parts
    dropped = len(lines) - keep
    body = "\n".join(([left_out_marker(dropped)] if dropped else []) + lines[dropped:])
    out = list(messages)
    out[index] = {**messages[index], "content": header + body + footer}
    return out


def _dialogue_message(messages: Messages) -> tuple[int, tuple[str, list[str], str]] | None:
    """The last message holding an observation prompt, and its parts."""
    for index in range(len(messages) - 1, -1, -1):
        parts = split_prompt(messages[index]["content"])
        if parts is not None:
            return index, parts
    return None


def _ids(tokenizer: Any, messages: Messages, reply: str | None, reply_budget: int | None) -> tuple[list[int], int]:
    prompt = chat_token_ids(tokenizer, messages, add_generation_prompt=True)
    if reply is None:
        return prompt, len(prompt)
    full = chat_token_ids(tokenizer, messages + [{"role": "assistant", "content": reply}])
    if full[: len(prompt)] != prompt:
        raise ValueError(
            "the chat template does not extend the prompt with the reply; cannot separate the reply's tokens"
        )
    target = full[len(prompt) :]
    if reply_budget is not None:
        target = target[:reply_budget]
    return prompt + target, len(prompt)


def render_chat(
    tokenizer: Any,
    messages: Messages,
    budget: int,
    reply: str | None = None,
    reply_budget: int | None = None,
    raise_budget: str = RAISE_BUDGET,
) -> RenderedChat:
    """Token ids of `messages` (+ the assistant `reply`) within `budget` tokens.

    What goes, in order, until it fits: the oldest dialogue lines down to the latest one; then the header's
    profile details (`compact_header`), with as many recent lines as then fit; then the latest line. The
    system turn, scenario, names, secret, goal, closing line and reply always stay: a chat whose fixed part
    alone exceeds the budget raises PromptTooLong naming both sizes and `raise_budget`, what to change.
    reply_budget: at most this many reply tokens (the reply's tail is cut beyond it)."""
    if budget < 1:
        raise ValueError(f"the token budget must be at least 1, not {budget}")
    ids, prompt_length = _ids(tokenizer, messages, reply, reply_budget)
    if len(ids) <= budget:
        return RenderedChat(ids, prompt_length, 0)
    found = _dialogue_message(messages)
    if found is None:
        raise PromptTooLong(
            f"the prompt is {len(ids)} tokens, over the budget of {budget}, and is not an observation prompt whose "
            f"dialogue could be shortened; {raise_budget} or shorten the prompt"
        )
    index, (header, lines, footer) = found

    def most_lines(parts: tuple[str, list[str], str], least: int) -> RenderedChat | None:
        # Binary search for the most recent lines that fit (the length grows with every line kept).
        low, high, best = least, len(parts[1]), None
        while low <= high:
            keep = (low + high) // 2
            trial = _ids(tokenizer, _with_recent_lines(messages, index, parts, keep), reply, reply_budget)
            if len(trial[0]) <= budget:
                best, low = RenderedChat(trial[0], trial[1], len(parts[1]) - keep), keep + 1
            else:
                high = keep - 1
        return best

    latest = min(1, len(lines))
    for parts, least in (((header, lines, footer), latest), ((compact_header(header), lines, footer), 0)):
        fitted = most_lines(parts, least)
        if fitted is not None:
            return fitted
    fixed = len(
        _ids(
            tokenizer,
            _with_recent_lines(messages, index, (compact_header(header), lines, footer), 0),
            reply,
            reply_budget,
        )[0]
    )
    raise PromptTooLong(
        f"the fixed part of the prompt (system turn, scenario, names, secret, goal and closing line"
        f"{', reply' if reply is not None else ''}) is {fixed} tokens, over the budget of {budget}; "
        f"{raise_budget} or shorten the scenario texts"
    )


def prompt_budget(
    max_prompt_tokens: int, max_new_tokens: int = 0, context_length: int | None = None
) -> tuple[int, str]:
    """A generation request's prompt budget, and what to change to raise it (for errors): max_prompt_tokens,
    or less where the model's context (None: not known) would not also hold max_new_tokens."""
    if context_length is None or max_prompt_tokens + max_new_tokens <= context_length:
        return max_prompt_tokens, RAISE_BUDGET
    room = context_length - max_new_tokens
    if room < 1:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} leaves no room for a prompt in the model's context of "
            f"{context_length} tokens; ask for fewer new tokens or give the engine a longer context (max_model_len)"
        )
    return room, (
        f"the model's context of {context_length} tokens less max_new_tokens={max_new_tokens} leaves {room} "
        f"for the prompt (max_prompt_tokens={max_prompt_tokens}); ask for fewer new tokens, give the engine a "
        "longer context (max_model_len)"
    )


def render_prompts(
    tokenizer: Any,
    conversations: list[Messages],
    max_prompt_tokens: int,
    max_new_tokens: int = 0,
    context_length: int | None = None,
) -> list[list[int]]:
    """Prompt ids (with the generation prompt) of each conversation, fitted to the request's budget
    (`prompt_budget`). A conversation that cannot fit raises PromptTooLong with its index."""
    budget, raise_budget = prompt_budget(max_prompt_tokens, max_new_tokens, context_length)
    prompts = []
    for index, conv in enumerate(conversations):
        try:
            prompts.append(render_chat(tokenizer, conv, budget, raise_budget=raise_budget).ids)
        except PromptTooLong as exc:
            raise PromptTooLong(f"conversation {index}: {exc.reason}", index, exc.reason) from None
    return prompts
