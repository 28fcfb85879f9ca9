from __future__ import annotations

import json
from collections import Counter

import pytest

from sotopia_env.scenarios import (
    CATEGORIES,
    ScenarioFileError,
    is_hard,
    library_characters,
    library_pairings,
    library_scenarios,
    load_characters,
    load_scenarios,
    make_pairings,
    scenario_pairings,
    split,
)


def test_library_has_sixty_scenarios_over_every_category_and_forty_characters():
    scenarios = library_scenarios()
    assert len(scenarios) >= 60
    counts = Counter(s.category for s in scenarios.values())
    assert set(counts) == set(CATEGORIES)
    assert len(library_characters()) >= 40


def test_hard_split_follows_the_documented_rule_and_has_ten_pairings_each():
    hard = split("hard")
    assert len(hard) >= 14
    for s in hard:
        assert "conflict" in s.tags and ("asymmetry" in s.tags or any(r.secret for r in s.roles))
    easy = [s for s in library_scenarios().values() if not is_hard(s)]
    assert easy and all(
        "conflict" not in s.tags or ("asymmetry" not in s.tags and not any(r.secret for r in s.roles)) for s in easy
    )
    pairings = library_pairings()
    assert set(pairings) == {s.id for s in hard}
    chars = library_characters()
    for pairs in pairings.values():
        assert len(pairs) == 10 and len(set(pairs)) == 10
        assert all(a in chars and b in chars and a != b for a, b in pairs)


def test_unknown_split_names_the_choices():
    with pytest.raises(ValueError, match="unknown split 'impossible'.*hard"):
        split("impossible")


def _write(tmp_path, name, records):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


GOOD = {
    "id": "s1",
    "situation": "Two people meet.",
    "relationship": "friend",
    "roles": [{"goal": "Say hi."}, {"goal": "Say bye.", "secret": "Tired."}],
    "category": "negotiation",
}


def test_bad_scenario_field_error_names_file_record_and_field(tmp_path):
    bad = dict(GOOD, id="s2", relationship="pen_pal")
    path = _write(tmp_path, "mine.jsonl", [GOOD, bad])
    with pytest.raises(ScenarioFileError) as err:
        load_scenarios(path)
    message = str(err.value)
    assert "mine.jsonl" in message and "line 2" in message and "'s2'" in message and "relationship" in message


def test_missing_goal_and_wrong_role_count_are_reported(tmp_path):
    path = _write(tmp_path, "a.jsonl", [dict(GOOD, roles=[{"goal": "only one"}])])
    with pytest.raises(ScenarioFileError, match="roles"):
        load_scenarios(path)
    path = _write(tmp_path, "b.jsonl", [dict(GOOD, roles=[{"secret": "x"}, {"goal": "g"}])])
    with pytest.raises(ScenarioFileError, match=r"roles\.0\.goal"):
        load_scenarios(path)


def test_duplicate_ids_across_files_are_rejected(tmp_path):
    a = _write(tmp_path, "a.jsonl", [GOOD])
    b = _write(tmp_path, "b.jsonl", [GOOD])
    with pytest.raises(ScenarioFileError, match="duplicate id 's1'.*a.jsonl"):
        load_scenarios(a, b)


def test_malformed_json_reports_the_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(GOOD) + "\n{not json\n")
    with pytest.raises(ScenarioFileError, match="broken.jsonl: line 2: not valid JSON"):
        load_scenarios(path)


def test_character_validation_names_the_field(tmp_path):
    path = tmp_path / "chars.json"
    path.write_text(
        json.dumps([{"id": "x", "name": "X", "age": 12, "occupation": "o", "pronouns": "p", "personality": "q"}])
    )
    with pytest.raises(ScenarioFileError, match=r"chars.json: record 0 \(id 'x'\): field 'age'"):
        load_characters(path)
    path.write_text(
        json.dumps(
            [
                {
                    "id": "x",
                    "name": "X",
                    "age": 30,
                    "occupation": "o",
                    "pronouns": "p",
                    "personality": "q",
                    "colour": "red",
                }
            ]
        )
    )
    with pytest.raises(ScenarioFileError, match="field 'colour'"):
        load_characters(path)


def test_shipped_pairings_are_reproducible_from_their_seed():
    hard = [s.id for s in split("hard")]
    rebuilt = make_pairings(hard, sorted(library_characters()), 10, seed=2026)
    assert {k: tuple(map(tuple, v)) for k, v in rebuilt.items()} == library_pairings()


def test_a_listed_scenario_uses_its_listed_pairings_of_loaded_characters_in_order():
    sid = split("hard")[0].id
    listed = list(library_pairings()[sid])
    characters = library_characters()
    assert scenario_pairings(sid, characters) == listed
    assert scenario_pairings(sid, characters, count=3, rng=99) == listed[:3]  # listed: the seed plays no part
    missing = listed[0][0]  # a pool without this character keeps only the pairings it can fill
    pool = {c for c in characters if c != missing}
    assert scenario_pairings(sid, pool) == [p for p in listed if missing not in p]


def test_an_unlisted_scenario_draws_distinct_ordered_pairs_from_its_seed():
    sid = next(s.id for s in split("all") if s.id not in library_pairings())
    # Three characters have 3 x 2 = 6 ordered pairs: asking for all six gives each once, sorted.
    assert scenario_pairings(sid, ["c", "a", "b"], count=6) == [
        ("a", "b"),
        ("a", "c"),
        ("b", "a"),
        ("b", "c"),
        ("c", "a"),
        ("c", "b"),
    ]
    characters = library_characters()
    drawn = scenario_pairings(sid, characters, rng=5)
    assert len(drawn) == 10 == len(set(drawn)) and all(a != b for a, b in drawn)
    assert drawn == scenario_pairings(sid, characters, rng=5) != scenario_pairings(sid, characters, rng=6)
    assert scenario_pairings(sid, characters, listed={}) == scenario_pairings(sid, characters)
    with pytest.raises(ValueError, match="3 characters allow only 6 ordered pairs, not 7"):
        scenario_pairings(sid, ["a", "b", "c"], count=7)


def test_the_env_the_runner_and_the_benchmark_choose_pairings_the_same_way():
    from agents.runner import jobs_for
    from benchmarks.hard_tasks import BenchmarkConfig, plan
    from sotopia_env import SocialParallelEnv

    hard, easy = split("hard")[0], next(s for s in split("all") if s.id not in library_pairings())
    characters = library_characters()
    # The runner draws for every unlisted scenario from one generator seeded once; a listed scenario draws
    # nothing from it, so here `easy` gets the pairs of seed 3 itself.
    jobs = jobs_for([hard, easy], pairs_per_scenario=2, seed=3)
    assert [(j.start.scenario, j.start.characters) for j in jobs] == [
        (hard.id, p) for p in library_pairings()[hard.id][:2]
    ] + [(easy.id, p) for p in scenario_pairings(easy.id, characters, 2, 3)]
    cells = plan(BenchmarkConfig(split="all", pairings=2, seed=4))
    drawn = scenario_pairings(easy.id, characters, 2, 4)
    assert sorted({c.characters for c in cells if c.scenario == easy.id}) == drawn
    assert sorted({c.characters for c in cells if c.scenario == hard.id}) == sorted(library_pairings()[hard.id][:2])
    env = SocialParallelEnv()
    for seed in range(5):
        env.reset(seed=seed, options={"scenario": hard.id})
        assert tuple(c.id for c in env.pair) in library_pairings()[hard.id]
    two = [characters["ben_kowalski"], characters["amara_okafor"]]
    env = SocialParallelEnv(characters=two)
    env.reset(seed=0, options={"scenario": easy.id})
    assert {c.id for c in env.pair} == {"ben_kowalski", "amara_okafor"}
