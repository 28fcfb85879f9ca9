from __future__ import annotations

import json

import pytest

from benchmarks.cli import main
from sotopia_env import Relationship, SocialParallelEnv, load_characters, load_scenarios
from sotopia_env.scenarios import ScenarioFileError
from sotopia_env.sotopia_import import import_sotopia


def all_files(fixtures):
    return sorted((fixtures / "sotopia").iterdir())


def test_import_reads_every_sotopia_record_kind(fixtures):
    result = import_sotopia(all_files(fixtures))
    assert set(result.scenarios) == {"01ENVAAAA", "01ENVBBBB"}
    tent = result.scenarios["01ENVAAAA"]
    assert tent.relationship is Relationship.friend and tent.hard and "hard" in tent.tags
    assert tent.roles[0].goal == "Get compensation for the torn tent (Extra information: A new tent costs $200.)"
    assert "(Strategy hint: You can offer to repair it yourself.)" in tent.roles[1].goal
    assert tent.source == "sotopia:fixture:borrowed_tent"
    assert not result.scenarios["01ENVBBBB"].hard
    mira = result.characters["01agta"]
    assert (mira.name, mira.age, mira.pronouns, mira.secret) == (
        "Mira Solberg",
        31,
        "She/her",
        "She lost a hiker once.",
    )
    assert result.pairings == {"01ENVAAAA": [("01agta", "01agtb")], "01ENVBBBB": [("01agtb", "01agta")]}


def test_imported_scenarios_run_in_the_env(fixtures):
    result = import_sotopia(all_files(fixtures))
    env = SocialParallelEnv(scenarios=list(result.scenarios.values()), characters=list(result.characters.values()))
    obs, _ = env.reset(seed=0, options={"scenario": "01ENVAAAA", "characters": result.pairings["01ENVAAAA"][0]})
    assert "torn" in obs["agent_0"]["prompt"] and "Mira Solberg" in obs["agent_0"]["prompt"]


def test_cli_import_writes_files_our_loaders_read(fixtures, tmp_path, capsys):
    assert main(["import-sotopia", *map(str, all_files(fixtures)), "--out", str(tmp_path)]) == 0
    assert "imported 2 scenarios (1 hard), 2 characters, 2 pairings" in capsys.readouterr().out
    assert set(load_scenarios(tmp_path / "scenarios.jsonl")) == {"01ENVAAAA", "01ENVBBBB"}
    assert len(load_characters(tmp_path / "characters.jsonl")) == 2
    assert json.loads((tmp_path / "pairings.json").read_text())["01ENVAAAA"] == [["01agta", "01agtb"]]


def test_bad_sotopia_record_names_file_record_and_field(tmp_path):
    path = tmp_path / "EnvironmentProfile.jsonl"
    path.write_text(json.dumps({"pk": "E1", "scenario": "s", "agent_goals": ["only one"]}) + "\n")
    with pytest.raises(ScenarioFileError, match=r"EnvironmentProfile.jsonl: line 1 \(pk 'E1'\).*agent_goals"):
        import_sotopia([path])
    path.write_text(json.dumps({"pk": "E1", "scenario": "s", "agent_goals": ["a", "b"], "relationship": 9}) + "\n")
    with pytest.raises(ScenarioFileError, match="relationship code 9"):
        import_sotopia([path])
    path.write_text(json.dumps({"what": "is this"}) + "\n")
    with pytest.raises(ScenarioFileError, match="not a Sotopia EnvironmentProfile"):
        import_sotopia([path])


def test_duplicate_sotopia_records_are_rejected(fixtures, tmp_path):
    env_file = fixtures / "sotopia" / "EnvironmentProfile.json"
    with pytest.raises(ScenarioFileError, match="duplicate environment pk '01ENVAAAA'"):
        import_sotopia([env_file, env_file])
