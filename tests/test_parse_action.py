"""`parse_action` answers a plain utterance on a short path; these pin that path to the full rules' answers
at each of its edges (length limit, blank text, characters outside printable ASCII)."""

from __future__ import annotations

import pytest

from sotopia_env.actions import Action, ActionType, parse_action


@pytest.mark.parametrize(
    ("raw", "expected", "repairs"),
    [
        ("Hello there.", Action(ActionType.speak, "Hello there."), []),
        ("x" * 20, Action(ActionType.speak, "x" * 20), []),  # exactly at the limit of 20
        ("  padded  ", Action(ActionType.speak, "  padded  "), []),  # kept as written
        ("   ", Action(ActionType.none), ["empty speak treated as none"]),
        ("", Action(ActionType.none), ["empty speak treated as none"]),
        ("two\nlines", Action(ActionType.speak, "two\nlines"), []),  # newline: allowed, not printable ASCII
        ("caf\u00e9", Action(ActionType.speak, "caf\u00e9"), []),
        ("bad \ud800", Action(ActionType.speak, "bad \ufffd"), ["replaced 1 unsupported character(s) with U+FFFD"]),
    ],
)
def test_plain_strings_parse_to_the_full_rules_answer(raw, expected, repairs):
    assert parse_action("agent_0", raw, 20) == (expected, repairs)


def test_a_string_over_the_limit_is_refused_with_its_length():
    with pytest.raises(ValueError, match="utterance of 21 characters is over the limit of 20"):
        parse_action("agent_0", "x" * 21, 20)
