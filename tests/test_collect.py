"""`sotopia-env collect --library DIR`: episodes of a library folder (generate-tasks and import-sotopia write
one) instead of the shipped library, its split and pairings honoured; a bad folder is one error line."""

from __future__ import annotations

import json

import pytest

from benchmarks.cli import main
from sotopia_env import read_episodes
from sotopia_env.scenarios import library_characters, library_scenarios

SCRIPTED = ["--policy", "scripted:Hello.|Deal.", "--partner", "scripted:Hi.|Fine.", "--max-turns", "4"]


def character(cid: str, name: str) -> dict:
    return {
        "id": cid,
        "name": name,
        "age": 30,
        "occupation": "ferry pilot",
        "pronouns": "they/them",
        "gender": "nonbinary",
        "personality": "Calm.",
        "values": ["order"],
        "decision_style": "Slow.",
        "public_info": "Runs the island ferry.",
        "secret": "",
    }


def scenario(sid: str, goals: tuple[str, str], tags: list[str], secret: str = "") -> dict:
    return {
        "id": sid,
        "category": "negotiation",
        "relationship": "stranger",
        "situation": f"Two people on a small island argue about the ferry timetable ({sid}).",
        "roles": [{"goal": goals[0]}, {"goal": goals[1], "secret": secret}],
        "tags": tags,
    }


def write_library(root) -> None:
    """Three scenarios (two hard), three characters, all with ids the shipped library does not use; pairings
    listed for one hard scenario only."""
    root.mkdir()
    scenarios = [
        scenario("isle-ferry-fare", ("Raise the fare to $12.", "Keep it at $8."), ["conflict", "asymmetry"]),
        scenario("isle-ferry-time", ("Move the last ferry to 9 pm.", "Keep it at 7 pm."), ["conflict"], "You drink."),
        scenario("isle-ferry-paint", ("Paint the ferry blue.", "Pick a colour together."), []),
    ]
    characters = [character("isle_ana", "Ana Roe"), character("isle_bo", "Bo Lind"), character("isle_cy", "Cy Moor")]
    (root / "scenarios.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenarios))
    (root / "characters.jsonl").write_text("".join(json.dumps(c) + "\n" for c in characters))
    (root / "pairings.json").write_text(json.dumps({"isle-ferry-fare": [["isle_cy", "isle_ana"]]}))


def test_collect_plays_only_the_librarys_scenarios_of_the_split_with_its_characters_and_pairings(tmp_path, capsys):
    library, out = tmp_path / "isle", tmp_path / "episodes.jsonl"
    write_library(library)
    argv = ["collect", "--library", str(library), "--split", "hard", *SCRIPTED, "--both-seats", "--out", str(out)]
    assert main(argv) == 0
    episodes = read_episodes(out)
    # hard: the fare (conflict + asymmetry) and the timetable (conflict + a secret); not the paint.
    assert sorted({e.scenario.id for e in episodes}) == ["isle-ferry-fare", "isle-ferry-time"]
    assert len(episodes) == 4  # 2 scenarios x 1 pairing x both seats
    pairs = {(e.scenario.id, tuple(c.id for c in e.characters)) for e in episodes}
    assert {p for s, p in pairs if s == "isle-ferry-fare"} == {("isle_cy", "isle_ana"), ("isle_ana", "isle_cy")}
    [drawn, swapped] = sorted(p for s, p in pairs if s == "isle-ferry-time")  # no listed pairing: drawn
    assert set(drawn) <= {"isle_ana", "isle_bo", "isle_cy"} and swapped == drawn[::-1]
    assert episodes[0].scenario.roles[0].goal in {"Raise the fare to $12.", "Move the last ferry to 9 pm."}
    assert not {e.scenario.id for e in episodes} & set(library_scenarios())
    assert not {c.id for e in episodes for c in e.characters} & set(library_characters())
    assert "4 new episode(s), 4 in the plan" in capsys.readouterr().out
    assert main(argv) == 0  # a rerun resumes: nothing left to play
    assert "0 new episode(s), 4 in the plan" in capsys.readouterr().out and len(read_episodes(out)) == 4
    everything = tmp_path / "all.jsonl"
    assert main(["collect", "--library", str(library), *SCRIPTED, "--out", str(everything)]) == 0  # split all
    assert sorted(e.scenario.id for e in read_episodes(everything)) == [
        "isle-ferry-fare",
        "isle-ferry-paint",
        "isle-ferry-time",
    ]


def test_collect_plays_a_library_import_sotopia_wrote_with_its_hard_tag_and_combos(fixtures, tmp_path):
    library, out = tmp_path / "sotopia", tmp_path / "episodes.jsonl"
    assert main(["import-sotopia", *map(str, sorted((fixtures / "sotopia").iterdir())), "--out", str(library)]) == 0
    assert main(["collect", "--library", str(library), "--split", "hard", *SCRIPTED, "--out", str(out)]) == 0
    # 01ENVAAAA is on a "hard" EnvironmentList; its one env-agent combo is the pairing played.
    [episode] = read_episodes(out)
    assert (episode.scenario.id, [c.id for c in episode.characters]) == ("01ENVAAAA", ["01agta", "01agtb"])


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        (None, "CollectConfig.library = '{library}': must be a library folder"),  # no folder at all
        ("characters.jsonl", "it has no characters.jsonl (set --library)"),
        ("scenario record", "{library}/scenarios.jsonl: line 1"),
        ("pairings.json", "{library}/pairings.json: scenario 'isle-ferry-fare'"),
    ],
)
def test_a_bad_library_is_one_error_line_before_any_episode(damage, named, tmp_path, capsys):
    library, out = tmp_path / "isle", tmp_path / "episodes.jsonl"
    if damage is not None:
        write_library(library)
    if damage == "characters.jsonl":
        (library / "characters.jsonl").unlink()
    elif damage == "scenario record":
        (library / "scenarios.jsonl").write_text('{"id": "isle-broken", "category": "negotiation"}\n')
    elif damage == "pairings.json":
        (library / "pairings.json").write_text(json.dumps({"isle-ferry-fare": [["isle_cy"]]}))
    assert main(["collect", "--library", str(library), *SCRIPTED, "--out", str(out)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sotopia-env collect: error: ") and "Traceback" not in lines[0]
    assert named.format(library=library) in lines[0], lines[0]
    assert not out.exists()


def test_the_benchmark_plans_a_library_folder_through_the_same_loader(tmp_path):
    """`benchmark --library` reads the folder with collect's loader: its hard split, listed pairing and
    characters; a folder without characters is the loader's error."""
    from benchmarks.hard_tasks import BenchmarkConfig, load_pool, plan

    library = tmp_path / "isle"
    write_library(library)
    cfg = BenchmarkConfig(policies=["scripted:Hi."], library=str(library), split="hard", pairings=1)
    cells = plan(cfg, load_pool(cfg))
    assert sorted({c.scenario for c in cells}) == ["isle-ferry-fare", "isle-ferry-time"]
    assert {c.characters for c in cells if c.scenario == "isle-ferry-fare"} == {("isle_cy", "isle_ana")}
    assert {x for c in cells for x in c.characters} <= {"isle_ana", "isle_bo", "isle_cy"}
    (library / "characters.jsonl").unlink()
    with pytest.raises(FileNotFoundError, match="characters.jsonl"):
        load_pool(cfg)


def test_two_collect_runs_never_share_an_episode_id_and_a_rerun_keeps_its_ids_or_is_refused(tmp_path, capsys):
    """Two runs of the same plan make the same dialogues (the seeds do not depend on the run), under ids that
    name each run; a rerun into one --out resumes with its ids, and one with another policy or sampling is
    refused before anything plays (sotopia_env.provenance) unless --resume-anyway."""
    library = tmp_path / "isle"
    write_library(library)
    plan = ["collect", "--library", str(library), *SCRIPTED, "--both-seats"]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main([*plan, "--out", str(a)]) == 0 and main([*plan, "--out", str(b)]) == 0
    run_a, run_b = (json.loads(p.with_suffix(".settings.json").read_text())["run_id"] for p in (a, b))
    first, second = read_episodes(a), read_episodes(b)
    assert len(first) == 6 and run_a != run_b
    assert [e.id.split("|", 1) for e in first] == [[run_a, e.id.split("|", 1)[1]] for e in first]
    assert not {e.id for e in first} & {e.id for e in second}  # merged, no two dialogues share an id
    assert [[t.argument for t in e.turns] for e in first] == [[t.argument for t in e.turns] for e in second]
    capsys.readouterr()
    assert main([*plan, "--out", str(a)]) == 0  # a resume: nothing left to play, the same ids
    assert "0 new episode(s)" in capsys.readouterr().out and [e.id for e in read_episodes(a)] == [e.id for e in first]
    assert main([*plan, "--max-turns", "6", "--out", str(a)]) == 2
    error = capsys.readouterr().err
    assert f"{a} was made with other settings (max_turns: 4 -> 6;" in error and "--resume-anyway" in error
    assert main([*plan, "--split", "hard", "--out", str(a)]) == 0  # which episodes to play may change
    assert main([*plan, "--max-turns", "6", "--resume-anyway", "--out", str(a)]) == 0
    assert "warning: " in capsys.readouterr().err
