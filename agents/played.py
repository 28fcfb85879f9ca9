"""What a sampled reply played, as the tokens a trainer trains on.

An engine samples a reply: token ids, each with the sampler's log-prob, ending where the sampler ended (an
end-of-sequence token, or the token in which a stop string such as `REPLY_STOP`'s line break appeared). The
parser (`agents.llm_agent.parse_reply_span`) keeps one span of its text: the action the env plays and the reward
model scores. A trainer must give that reply's advantage to the span's tokens and nothing else: a speaker
prefix, surrounding quotes or a second line the parser dropped were never played, and reinforcing them (an
invented partner turn, say) whenever the played line scored well is learning what nobody scored.

`trained_reply` turns a sample into exactly that:
- `ids`: the sampled ids up to the last trained token (what comes after it cannot matter to what is trained);
- `mask`: 1 on the tokens whose text lies in the span (a token's own leading or trailing whitespace aside:
  the env strips it) and on the end token when the sample stopped by itself right after the span (nothing but
  whitespace or a dropped closing quote in between), 0 on the tokens that stay only as context (a prefix);
- a span whose edge falls inside a token (`."` where the parser dropped the quote) cannot be trained exactly:
  no set of sampled tokens decodes to the played text, so the reply is left out of the update (`untrained`)
  and counted; its reward still counts in its group's baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sotopia_env.actions import Action

from .engine import Sample
from .llm_agent import parse_reply_span

_AFTER_SPAN = " \t\r\n\"'"  # what may lie between a played span and the end token it is trained with


@dataclass
class TrainedReply:
    """A sampled reply as played and as trained."""

    action: Action  # what the env plays
    text: str  # the reply's text the action came from (a JSON action's object, or the speech)
    ids: list[int]  # the sampled ids, cut after the last trained one
    mask: list[int]  # per id: 1 trained, 0 context only
    logprobs: list[float] | None  # per id: the sampler's log-prob, where the engine gave them
    cut: bool  # the sampler stopped at max_new_tokens, not by itself
    untrained: bool  # no token of it is trained (see the module docstring)

    @property
    def repaired(self) -> bool:
        return bool(self.action.repairs)

    @property
    def trained_ids(self) -> list[int]:
        return [t for t, m in zip(self.ids, self.mask) if m]


def end_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Every id that ends a reply: the tokenizer's end of sequence and the model's generation config's (several
    for Llama 3 or Qwen)."""
    ids = {tokenizer.eos_token_id}
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids |= set(config_eos) if isinstance(config_eos, (list, tuple)) else {config_eos}
    return {i for i in ids if i is not None}


def token_spans(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of `ids` and each token's (start, end) in it. A token that ends inside a character (part
    of a multi-byte character) shares the range of the tokens that complete it."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    spans: list[tuple[int, int]] = []
    start, pending = 0, 0
    for k in range(len(ids)):
        prefix = tokenizer.decode(list(ids[: k + 1]), skip_special_tokens=True)
        pending += 1
        if text.startswith(prefix) and not prefix.endswith("\ufffd"):
            spans += [(start, len(prefix))] * pending
            start, pending = len(prefix), 0
    spans += [(start, len(text))] * pending
    return text, spans


def _inside(text: str, span: tuple[int, int], token: tuple[int, int]) -> bool:
    a, b = token
    piece = text[a:b]
    core = piece.strip()
    if not core:  # whitespace between two words of the span
        return span[0] <= a and b <= span[1] and a < b
    lead = len(piece) - len(piece.lstrip())
    return span[0] <= a + lead and a + lead + len(core) <= span[1]


def trained_reply(
    sample: Sample,
    tokenizer: Any,
    speaker: str | None = None,
    stop: Sequence[str] = (),
    ends: set[int] | None = None,
    max_chars: int = 2000,
) -> TrainedReply:
    """The action `sample` plays (parsed with the speaker's name, as the env's agents parse it) and the tokens a
    trainer trains on for it (see the module docstring). stop: the stop strings it was sampled with; ends: the
    end-of-sequence ids (`end_ids`)."""
    ends = end_ids(tokenizer) if ends is None else ends
    ids = list(sample.token_ids)
    logprobs = list(sample.logprobs) if sample.logprobs is not None else None
    if logprobs is not None and len(logprobs) != len(ids):
        raise ValueError(f"the engine gave {len(logprobs)} log-probs for {len(ids)} sampled tokens")
    stopped = sample.finish_reason == "stop" and bool(ids)
    last = tokenizer.decode([ids[-1]]) if ids else ""
    has_end = stopped and (ids[-1] in ends or any(s in last for s in stop))
    body = ids[:-1] if has_end else ids
    text, spans = token_spans(tokenizer, body)
    action, (s, e) = parse_reply_span(sample.text, speaker, max_chars)
    played = sample.text[s:e]
    inside = [k for k, tok in enumerate(spans) if _inside(text, (s, e), tok)]
    exact = (
        text.startswith(sample.text[:e].rstrip())  # the offsets are the decoded body's
        and inside == list(range(inside[0], inside[-1] + 1))
        and tokenizer.decode([body[k] for k in inside], skip_special_tokens=True).strip() == played.strip()
        if inside
        else not played.strip()  # nothing played (an empty reply): only its end can be trained
    )
    if not exact:
        return TrainedReply(action, played, [], [], None, sample.finish_reason == "length", untrained=True)
    after = inside[-1] + 1 if inside else 0
    mask = [0] * len(body)
    for k in inside:
        mask[k] = 1
    rest = text[spans[inside[-1]][1] :] if inside else text  # what the reply says after the played span
    train_end = has_end and not rest.strip(_AFTER_SPAN)
    if train_end:
        keep, mask = len(ids), mask + [1]
    else:
        keep, mask = after, mask[:after]
    if not any(mask):
        return TrainedReply(action, played, [], [], None, sample.finish_reason == "length", untrained=True)
    return TrainedReply(
        action,
        played,
        ids[:keep],
        mask,
        logprobs[:keep] if logprobs is not None else None,
        cut=sample.finish_reason == "length",
        untrained=False,
    )
