"""The viewer over files that change and files that hold odd values, through the real app (FastAPI's
TestClient; no browser): a file rewritten while served is re-indexed, a value of the wrong type is shown
as written, and JSON nested too deep is reported with its file and line instead of stopping the viewer."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastapi.testclient import TestClient

from sotopia_env import Episode, Turn, library_characters, library_scenarios
from sotopia_env.episode import append_jsonl, write_jsonl_atomic
from viewer.app import create_app
from viewer.catalog import Catalog

SCENARIO = library_scenarios()[sorted(library_scenarios())[0]]
CHARACTERS = library_characters()
PAIR = (CHARACTERS[sorted(CHARACTERS)[0]], CHARACTERS[sorted(CHARACTERS)[1]])
BASE = "http://127.0.0.1:8765"  # the address the app is asked at (the Host header the guard checks)
DEEP = "[" * 100_000 + "]" * 100_000  # deeper than any JSON parser's recursion limit


def episode(episode_id: str, said: str, reward: float = 1.0) -> Episode:
    turn = Turn(index=0, agent="agent_0", character=PAIR[0].name, action_type="speak", argument=said, reward=reward)
    return Episode(id=episode_id, scenario=SCENARIO, characters=PAIR, agents=("agent_0", "agent_1"), turns=[turn])


def client(*paths: Path, labels: Path | None = None) -> TestClient:
    return TestClient(create_app(Catalog(list(paths), labels)), base_url=BASE)


def test_a_file_rewritten_while_served_is_reindexed_and_never_serves_another_record(tmp_path):
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [episode("ep-a", "From A."), episode("ep-b", "From B.")])
    web = client(path)
    assert "From A." in web.get("/episode/ep-a").text
    # GRPO's resume, the judge and the labeller rewrite a file whole (beside it, renamed over it): here the two
    # records swap places. Their lines have the same length, so ep-a's old offset now holds ep-b's line.
    write_jsonl_atomic(path, [episode("ep-b", "From B."), episode("ep-a", "From A.")])
    page = web.get("/episode/ep-a")
    assert page.status_code == 200 and "From A." in page.text and "From B." not in page.text
    assert f"{path.name}, line 2" in page.text
    # Rewritten with other lengths, one record gone and one new: the list and the pages follow the file.
    write_jsonl_atomic(path, [episode("ep-c", "A new, much longer first line than before."), episode("ep-b", "B.")])
    assert web.get("/episode/ep-a").status_code == 404
    page = web.get("/episode/ep-b")
    assert page.status_code == 200 and "B." in page.text and "From B." not in page.text
    listed = web.get("/").text
    assert "ep-c" in listed and "ep-a" not in listed and "2 of 2" in listed
    # An append in place (same file, larger): the new record is listed.
    append_jsonl(path, episode("ep-d", "Appended."))
    assert "ep-d" in web.get("/").text and "Appended." in web.get("/episode/ep-d").text
    # Removed: its episodes go, and the problems page says why.
    path.unlink()
    assert web.get("/episode/ep-d").status_code == 404
    assert f"{path}: cannot be read (No such file or directory)" in web.get("/problems").text


def test_a_label_file_rewritten_while_served_recolours_with_its_new_labels(tmp_path):
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [episode("ep-a", "Hello.")])
    labels = tmp_path / "labels.jsonl"
    write_jsonl_atomic(labels, [{"episode_id": "ep-a", "turn_index": 0, "label": 1.25}])
    web = client(path, labels=labels)
    assert "label 1.25" in web.get("/episode/ep-a").text
    write_jsonl_atomic(labels, [{"episode_id": "ep-a", "turn_index": 0, "label": 7.5}])
    page = web.get("/episode/ep-a").text
    assert "label 7.50" in page and "label 1.25" not in page


def test_a_value_of_the_wrong_type_is_shown_as_written_instead_of_a_server_error(tmp_path):
    trained = episode("ep-trained", "We could split it.")
    trained.meta["training"] = {
        "learner_agents": ["agent_0"],
        "candidates": {"0": [{"text": "Give it all to me.", "played": False, "reward": "abc"}]},
    }
    odd_shapes = episode("ep-odd", "Hi.")
    odd_shapes.meta["training"] = {"learner_agents": 3, "candidates": ["not", "a", "mapping"]}
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [trained, odd_shapes])
    with path.open("a") as f:  # a recorded reward that is not a number: the record is left out and named
        f.write(episode("ep-bad-reward", "x").model_dump_json().replace('"reward":1.0', '"reward":"abc"') + "\n")
    labels = tmp_path / "labels.jsonl"
    write_jsonl_atomic(
        labels,
        [
            {"episode_id": "ep-trained", "turn_index": 0, "label": "abc", "dims": {"goal": "high"}, "normalized": []},
            {"episode_id": "ep-odd", "turn_index": 0, "label": 2.0, "dims": "goal=3"},
        ],
    )
    web = client(path, labels=labels)
    page = web.get("/episode/ep-trained")
    assert page.status_code == 200, page.text[-2000:]
    assert "&#39;abc&#39; (not a number)" in page.text and "&#39;high&#39; (not a number)" in page.text
    assert "Give it all to me." in page.text
    page = web.get("/episode/ep-odd")
    assert page.status_code == 200, page.text[-2000:]
    assert "&#39;goal=3&#39; (not a number)" in page.text
    problems = web.get("/problems").text
    assert f"{path}:3: not an episode (Input should be a valid number" in problems and "turns.0.reward" in problems


def test_a_benchmark_report_with_values_of_the_wrong_type_is_shown_as_written(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    odd = {"mean": "abc", "low": None, "high": 5.5, "n": 3}
    report = {
        "policies": [
            {"spec": "embedded", "planned": 3, "judged": 3, "dimensions": {"goal": odd, "overall": odd}},
            {"spec": "other", "planned": 3, "judged": 0, "dimensions": "none"},
            "not a policy",
        ],
        "comparisons": [{"policy": "other", "baseline": "embedded", "pairs": 3, "differences": {"goal": odd}}],
    }
    (bench / "report.json").write_text(json.dumps(report))
    web = client(bench)
    page = web.get("/benchmark/0")
    assert page.status_code == 200, page.text[-2000:]
    assert page.text.count("&#39;abc&#39; (not a number)") == 3  # goal and overall of "embedded", the difference
    problems = web.get("/problems").text
    assert f"{bench / 'report.json'}: policies[1].dimensions is not a mapping" in problems
    assert f"{bench / 'report.json'}: policies[2] is not a mapping" in problems


def test_json_nested_too_deep_is_reported_with_its_file_and_line_instead_of_stopping_the_viewer(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    good = episode("ep-good", "Still shown.").model_dump_json()
    (run / "episodes.jsonl").write_text(f'{good}\n{{"id": {DEEP}}}\n')
    (run / "found.jsonl").write_text(DEEP + "\n")  # found in the folder: its first line is sniffed
    (run / "metrics.jsonl").write_text(f'{{"step": 1, "reward_mean": 0.5}}\n{DEEP}\n')
    (run / "summary.json").write_text(DEEP)
    (run / "report.json").write_text(DEEP)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(DEEP + "\n")
    web = client(run, labels=labels)
    assert "ep-good" in web.get("/").text
    problems = web.get("/problems").text
    for where in (
        f"{run / 'episodes.jsonl'}:2: not valid JSON (recursion limit exceeded",
        f"{run / 'found.jsonl'}:1: not valid JSON (recursion limit exceeded",
        f"{run / 'metrics.jsonl'}:2: not valid JSON (recursion limit exceeded",
        f"{run / 'summary.json'}: not valid JSON (recursion limit exceeded",
        f"{run / 'report.json'}: not valid JSON (recursion limit exceeded",
        f"{labels}:1: not valid JSON (recursion limit exceeded",
    ):
        assert where in problems, where
    assert web.get("/run/0").status_code == 200 and web.get("/benchmark/0").status_code == 200
    assert os.path.getsize(run / "episodes.jsonl") > 200_000  # the file really holds the deep line
