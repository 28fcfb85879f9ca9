"""`EpisodeStart`, the one type for where an episode starts, and its one rule for the other seat."""

from __future__ import annotations

import pytest

from sotopia_env import EpisodeStart, other_agent, other_seat


def test_the_other_seat_is_the_one_the_learner_does_not_hold():
    assert (other_seat(0), other_seat(1)) == (1, 0)
    assert (other_agent("agent_0"), other_agent("agent_1")) == ("agent_1", "agent_0")
    assert EpisodeStart("s", seat=1).partner == "agent_0" and EpisodeStart("s", seat=1).learner == "agent_1"
    assert EpisodeStart("s", seat="both").partner is None
    assert EpisodeStart("s", seat="both").learners == ("agent_0", "agent_1")
    with pytest.raises(ValueError, match="seat is 0 or 1"):
        other_seat(2)


def test_a_start_round_trips_through_json_and_reads_the_trl_rollouts_older_rows():
    start = EpisodeStart("neg-used-bike", seed=5, seat=1, characters=("ben_kowalski", "amara_okafor"))
    assert EpisodeStart.from_json(start.to_json()) == start
    assert start.options() == {
        "scenario": "neg-used-bike",
        "seat": 1,
        "characters": ("ben_kowalski", "amara_okafor"),
    }
    old = EpisodeStart.from_json('{"scenario": "x", "seed": 9, "learners": ["agent_1"]}')
    assert old == EpisodeStart("x", seed=9, seat=1)
    assert EpisodeStart.from_dict({"scenario": "x", "learners": ["agent_0", "agent_1"]}).seat == "both"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"scenario": ""}, "EpisodeStart.scenario"),
        ({"scenario": "x", "seat": 2}, "EpisodeStart.seat"),
        ({"scenario": "x", "characters": ("a",)}, "two character ids"),
        ({"scenario": "x", "characters": ("a", "a")}, "cannot talk to itself"),
    ],
)
def test_a_bad_start_is_refused_with_the_field_named(fields, named):
    with pytest.raises(ValueError, match=named):
        EpisodeStart(**fields)
