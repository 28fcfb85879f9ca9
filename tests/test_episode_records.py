from __future__ import annotations

import json

import pytest

from sotopia_env import SocialParallelEnv, read_episodes, to_hf_dataset, to_sotopia_episode_log
from sotopia_env.episode import Episode, episode_ids, write_episode


def play(path=None, judge=None, seed=0) -> Episode:
    env = SocialParallelEnv(
        episodes_path=path, judge=judge, agent_models={"agent_0": "scripted", "agent_1": "scripted"}
    )
    env.reset(seed=seed, options={"scenario": "exc-game-console"})
    env.step({"agent_0": "Does the lens have scratches?"})
    env.step({"agent_1": {"action_type": "action", "argument": "hands over the lens"}})
    env.step({"agent_0": {"action_type": "leave"}})
    return env.episode


def test_episode_round_trips_through_jsonl_with_everything_recorded(tmp_path):
    path = tmp_path / "eps.jsonl"
    ep = play(path, judge=lambda e: {"agent_0": {"goal": 6.0}, "agent_1": {"goal": 4.0}}, seed=7)
    [back] = read_episodes(path)
    assert back == ep
    assert back.scenario.id == "exc-game-console" and back.seed == 7 and back.package_version
    assert back.agent_models == {"agent_0": "scripted", "agent_1": "scripted"}
    assert [t.action_type for t in back.turns] == ["speak", "action", "leave"]
    assert back.judge_scores["agent_1"] == {"goal": 4.0}
    assert episode_ids(path) == {ep.id}


def test_a_crash_mid_write_loses_only_the_partial_line_and_the_next_append_repairs_it(tmp_path):
    path = tmp_path / "eps.jsonl"
    first = play(path)
    with path.open("a") as f:  # simulate a writer killed halfway through a line
        f.write('{"format_version": 1, "id": "half')
    assert [e.id for e in read_episodes(path)] == [first.id]
    second = play(path, seed=1)
    assert [e.id for e in read_episodes(path)] == [first.id, second.id]
    assert path.read_text().count("\n") == 2


def test_a_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "eps.jsonl"
    play(path)
    with path.open("a") as f:
        f.write("garbage\n")
    play(path, seed=2)
    with pytest.raises(ValueError, match=r"eps\.jsonl: line 2: not valid JSON"):
        read_episodes(path)


def test_export_to_sotopia_episode_log_shape():
    ep = play(judge=lambda e: {"agent_0": {"goal": 6.0, "believability": 8.0}, "agent_1": {"goal": 4.0}})
    log = to_sotopia_episode_log(ep)
    assert log["environment"] == "exc-game-console" and log["agents"] == [c.id for c in ep.characters]
    assert len(log["rewards"]) == 2 and log["rewards"][0] == (7.0, {"goal": 6.0, "believability": 8.0})
    first, *steps = log["messages"]
    assert [m[0] for m in first] == ["Environment", "Environment"]
    assert steps[0] == [(ep.characters[0].name, "Environment", 'said: "Does the lens have scratches?"')]
    assert steps[2][0][2] == "left the conversation"
    json.dumps(log)  # serialisable


def test_export_to_hf_dataset():
    ds = to_hf_dataset([play(seed=s) for s in range(3)])
    assert len(ds) == 3 and ds[0]["scenario_id"] == "exc-game-console"
    assert ds[0]["turns"][0]["argument"] == "Does the lens have scratches?"


def test_write_episode_appends(tmp_path):
    path = tmp_path / "e.jsonl"
    ep = play()
    write_episode(path, ep)
    write_episode(path, ep.model_copy(update={"id": "other"}))
    assert episode_ids(path) == {ep.id, "other"}
