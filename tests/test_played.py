"""What a sampled reply trains on is what it played (agents.played): the tokens of the span the parser kept and
the end token the sampler produced, nothing the parser dropped. Checked on the embedded model's tokenizer with
replies written here (each shape the parser repairs), so every case is known; tests/test_online_grpo.py checks
the same on a real step's samples."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from agents.engine import Sample
from agents.llm_agent import REPLY_STOP, parse_reply_span
from agents.played import trained_reply
from sotopia_env.actions import ActionType


@pytest.fixture(scope="module")
def tokenizer(embedded_dir):
    return AutoTokenizer.from_pretrained(embedded_dir)


def sampled(tokenizer, text: str, end: str | None) -> Sample:
    """A sample as an engine returns it: the reply's tokens, then the token that ended it (an end id or a line
    break, the stop), finish "stop"; without an end, cut at max_new_tokens ("length")."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if end == "eos":
        ids.append(tokenizer.eos_token_id)
    elif end == "newline":
        ids += tokenizer.encode("\n", add_special_tokens=False)
    return Sample(text=text, token_ids=ids, logprobs=[-0.5] * len(ids), finish_reason="stop" if end else "length")


def decoded(tokenizer, reply) -> str:
    return tokenizer.decode(reply.trained_ids, skip_special_tokens=False)


@pytest.mark.parametrize(
    ("text", "end", "argument", "trained"),
    [
        ("I can do $400.", "eos", "I can do $400.", "I can do $400.<|im_end|>"),
        ("I can do $400.", "newline", "I can do $400.", "I can do $400.\n"),
        # A speaker prefix is dropped by the parser: its tokens stay as context, untrained.
        ("Ben Kowalski: Fine, deal.", "newline", "Fine, deal.", " Fine, deal.\n"),
        ("Ben said: sure thing", "eos", "sure thing", " sure thing<|im_end|>"),
        # A JSON action is played as its object: the object's tokens are trained, the prose before it is not.
        (
            'Okay. {"action_type": "leave", "argument": ""}',
            "eos",
            "",
            ' {"action_type": "leave", "argument": ""}<|im_end|>',
        ),
        # Cut at max_new_tokens: the played text is trained, and there is no end token to train.
        ("I was going to say that", None, "I was going to say that", "I was going to say that"),
        # Nothing said (a reply that is only whitespace): only the end the sampler chose is trained.
        ("  ", "newline", "", "\n"),
    ],
)
def test_the_trained_tokens_decode_to_the_played_text_and_the_sampled_end(tokenizer, text, end, argument, trained):
    reply = trained_reply(sampled(tokenizer, text, end), tokenizer, "Ben Kowalski", REPLY_STOP)
    assert reply.action.argument == argument and not reply.untrained
    assert decoded(tokenizer, reply) == trained
    assert len(reply.ids) == len(reply.mask) == len(reply.logprobs)
    # The completion is the sampled ids up to the last trained one: a prefix of what was sampled.
    assert reply.ids == sampled(tokenizer, text, end).token_ids[: len(reply.ids)]


def test_a_second_line_is_neither_played_nor_trained(tokenizer):
    """An engine without the line stop (or a server that ignores it) may return the partner's invented turn: the
    first line is played, and the completion stops after it."""
    sample = sampled(tokenizer, "Deal, $420.\nAmara Okafor: No way!", "eos")
    reply = trained_reply(sample, tokenizer, "Ben Kowalski", REPLY_STOP)
    assert (
        reply.action.argument == "Deal, $420."
        and "kept only the first line of a multi-line reply" in reply.action.repairs
    )
    assert decoded(tokenizer, reply) == "Deal, $420."  # no end token: the sampler did not end the reply there
    assert "Amara" not in tokenizer.decode(reply.ids)


def test_a_cut_inside_a_token_leaves_the_reply_untrained(tokenizer):
    """The parser drops the closing quote of '"Hello there."', but '."' is one token: no set of sampled tokens
    decodes to the played text, so nothing of the reply is trained (its reward still counts in the baseline)."""
    sample = sampled(tokenizer, '"Hello there."', "eos")
    assert any(tokenizer.decode([t]) == '."' for t in sample.token_ids)
    reply = trained_reply(sample, tokenizer, "Ben Kowalski", REPLY_STOP)
    assert reply.action.argument == "Hello there." and reply.untrained and reply.ids == [] and reply.mask == []


@pytest.mark.parametrize(
    "text",
    [
        "Hi.",
        '  "Quoted words"  ',
        "Ben: Ben Kowalski said: x",
        '{"action_type": "action", "argument": "waves"} ok',
        "\n\nHi",
    ],
)
def test_the_span_is_where_the_played_text_stands_in_the_reply(text):
    action, (start, end) = parse_reply_span(text, "Ben Kowalski")
    if action.action_type is ActionType.speak:
        assert text[start:end] == action.argument
    else:
        assert text[start:end].startswith("{") and text[start:end].endswith("}")
