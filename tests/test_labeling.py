"""`label_episodes` resumes what succeeded and retries what failed, matching failures to episodes by exact id.

A judge or attribution model that fails for one chosen episode and then recovers cannot be had from a real
model on demand (a real model fails when it fails), so these tests use `FlakyJudgeModel`: an engine that
answers every request with a valid JSON object built from the request's schema, except the requests a
test marks as failing, which get prose that no validator accepts.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agents.engine import Messages, Sample, SamplingParams
from benchmarks.cli import main
from rewards.attribution import AttributionConfig, Attributor
from rewards.dimensions import NAMES, SOTOPIA_EVAL
from rewards.judge import SYSTEM as JUDGE_SYSTEM
from rewards.judge import Judge
from rewards.labeling import label_episodes
from sotopia_env import Episode, SocialParallelEnv, read_episodes
from sotopia_env.episode import write_episode


class FlakyJudgeModel:
    model_name = "flaky-judge"

    def __init__(self) -> None:
        self.fails: Callable[[Messages], bool] = lambda conv: False
        self.seen: list[Messages] = []

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        self.seen += conversations
        return [
            [Sample("I would rather not say." if self.fails(c) else json.dumps(answer(params.json_schema)))]
            for c in conversations
        ]

    def load_adapter(self, path: str) -> None:
        raise NotImplementedError("the scripted judge has no adapters")


def answer(schema: dict) -> dict:
    """Judge requests get each dimension's maximum score; attribution requests rate every utterance 1 of 3."""
    props = schema["properties"]
    if all(p["type"] == "array" for p in props.values()):
        return {dim: [1] * p["minItems"] for dim, p in props.items()}
    return {dim: {"reasoning": "scripted", "score": p["properties"]["score"]["maximum"]} for dim, p in props.items()}


def episode(episode_id: str, opening: str) -> Episode:
    """agent_0 says `opening`, agent_1 answers, agent_0 leaves: one utterance per agent."""
    env = SocialParallelEnv(max_turns=6)
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    script = {"agent_0": [opening], "agent_1": ["Too much. $300?"]}
    while env.agents:
        agent = env.active_agents[0]
        env.step({agent: script[agent].pop(0) if script[agent] else {"action_type": "leave"}})
    ep = env.episode
    ep.id = episode_id
    return ep


def is_judge_request(conv: Messages) -> bool:
    return conv[0]["content"] == JUDGE_SYSTEM


def mentions(text: str) -> Callable[[Messages], bool]:
    return lambda conv: text in conv[-1]["content"]


@pytest.fixture
def setup(tmp_path):
    episodes_path = tmp_path / "episodes.jsonl"
    # "bike|1" is a prefix of "bike|10": the two must not share failures.
    write_episode(episodes_path, episode("bike|1", "It is $480."))
    write_episode(episodes_path, episode("bike|10", "Ten dollars off, final."))
    model = FlakyJudgeModel()
    out = tmp_path / "labels.jsonl"

    def run() -> dict:
        judge = Judge(model, cache_path=tmp_path / "judge_cache.jsonl", max_attempts=2)
        return label_episodes(episodes_path, out, judge, AttributionConfig(method="direct"), progress=False)

    return model, run, out


def raw_failures(out) -> dict[str, list[str]]:
    return {
        r["episode_id"]: r["failures"] for r in map(json.loads, out.with_suffix(".raw.jsonl").read_text().splitlines())
    }


def test_a_failed_judge_is_retried_on_the_next_run_and_failures_match_the_exact_episode_id(setup):
    model, run, out = setup
    model.fails = lambda conv: is_judge_request(conv) and mentions("Ten dollars off")(conv)
    first = run()
    failures = raw_failures(out)
    assert failures["bike|1"] == []  # today it also claims "bike|10 agent_0: no judge scores"
    assert len(failures["bike|10"]) == 4  # the judge on both agents, then "no judge scores" for both
    assert sum("after 2 attempts" in f for f in failures["bike|10"]) == 2
    assert first["labelled_now"] == 2 and {json.loads(line)["episode_id"] for line in out.read_text().splitlines()} == {
        "bike|1"
    }

    model.fails, model.seen = (lambda conv: False), []  # the judge model recovers
    second = run()
    # Only bike|10 is asked again: its judge (two agents) and its attribution (two agents).
    assert len(model.seen) == 4 and all(mentions("Ten dollars off")(conv) for conv in model.seen)
    assert second["labelled_now"] == 1 and second["failures"] == [] and second["rows"] == 4
    assert raw_failures(out) == {"bike|1": [], "bike|10": []}  # one line per episode: the retry replaced it
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # Judge score at the top of each range, attribution 1 of 3: direct labels are G / 3.
    assert {r["episode_id"] for r in rows} == {"bike|1", "bike|10"}
    assert all(r["dims"] == pytest.approx({"goal": 10 / 3, "relationship": 5 / 3, "knowledge": 10 / 3}) for r in rows)

    model.seen = []
    third = run()
    assert model.seen == [] and third["labelled_now"] == 0 and third["rows"] == 4


def test_a_failed_attribution_is_retried_alone_and_stays_with_its_episode(setup):
    model, run, out = setup
    model.fails = lambda conv: not is_judge_request(conv) and mentions("Ten dollars off")(conv)
    run()
    failures = raw_failures(out)
    assert failures["bike|1"] == []
    assert len(failures["bike|10"]) == 2 and all(
        f.startswith("bike|10 agent_") and "attribution failed" in f for f in failures["bike|10"]
    )

    model.fails, model.seen = (lambda conv: False), []
    second = run()
    # The judge answers are cached: the rerun asks only bike|10's two attribution requests.
    assert len(model.seen) == 2 and not any(is_judge_request(conv) for conv in model.seen)
    assert all(mentions("Ten dollars off")(conv) for conv in model.seen)
    assert second["labelled_now"] == 1 and second["failures"] == [] and second["rows"] == 4


def test_each_raw_record_names_the_settings_that_made_it_and_records_made_otherwise_are_labelled_again(tmp_path):
    episodes_path = tmp_path / "episodes.jsonl"
    write_episode(episodes_path, episode("bike|1", "It is $480."))
    model = FlakyJudgeModel()
    judge = Judge(model, cache_path=tmp_path / "judge_cache.jsonl")
    out = tmp_path / "labels.jsonl"
    label_episodes(episodes_path, out, judge, AttributionConfig(method="direct"), progress=False)
    [raw] = map(json.loads, out.with_suffix(".raw.jsonl").read_text().splitlines())
    assert raw["labelled_with"] == {
        "method": "direct",
        "dims": ["goal", "relationship", "knowledge"],
        "weights": None,
        "gamma": 0.9,
        "judge_model": "flaky-judge",
        "rejudge": False,
        "prompt_versions": ["judge-v1", "attribution-v1"],
        "dimension_set": SOTOPIA_EVAL.identity(),
    }
    again = label_episodes(episodes_path, out, judge, AttributionConfig(method="direct"), progress=False)
    assert again["labelled_now"] == 0
    # Other settings (a rerun the command let through with --resume-anyway): labelled again, not kept as they were.
    other = label_episodes(episodes_path, out, judge, AttributionConfig(method="uniform"), progress=False)
    assert other["labelled_now"] == 1
    [raw] = map(json.loads, out.with_suffix(".raw.jsonl").read_text().splitlines())
    assert raw["labelled_with"]["method"] == "uniform"


def test_label_and_attribution_refuse_episodes_sharing_an_id(tmp_path):
    """Labels are matched to episodes by id: two dialogues under one id would share one's labels."""
    episodes_path = tmp_path / "merged.jsonl"
    write_episode(episodes_path, episode("run|bike|1", "It is $480."))
    write_episode(episodes_path, episode("run|bike|1", "Ten dollars off, final."))
    model = FlakyJudgeModel()
    judge = Judge(model, cache_path=tmp_path / "judge_cache.jsonl")
    with pytest.raises(ValueError, match=r"merged\.jsonl: episodes 1 and 2 share the id 'run\|bike\|1'"):
        label_episodes(episodes_path, tmp_path / "labels.jsonl", judge, AttributionConfig(), progress=False)
    assert model.seen == []
    judged = [
        e.model_copy(update={"judge_scores": {"agent_0": dict.fromkeys(NAMES, 5.0)}})
        for e in read_episodes(episodes_path)
    ]
    with pytest.raises(ValueError, match=r"the episodes to attribute: episodes 1 and 2 share the id"):
        Attributor(None, AttributionConfig(method="uniform")).label_episodes(judged)


def test_a_label_rerun_with_another_method_is_refused_unless_resume_anyway(tmp_path, capsys):
    """`sotopia-env label` on episodes that carry judge scores, with a model-free method (no judge started)."""
    episodes_path = tmp_path / "episodes.jsonl"
    for n, opening in ((1, "It is $480."), (2, "Ten dollars off, final.")):
        scored = episode(f"bike|{n}", opening)
        scored.judge_scores = {a: dict.fromkeys(NAMES, float(n)) for a in scored.agents}
        write_episode(episodes_path, scored)
    out = tmp_path / "labels.jsonl"
    argv = ["label", "--episodes", str(episodes_path), "--out", str(out), "--judge", "", "--method", "uniform"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv[:-1], "discounting"]) == 2
    error = capsys.readouterr().err
    assert f"{out} was made with other settings (method: 'uniform' -> 'discounting';" in error
    assert "--resume-anyway" in error
    assert main([*argv[:-1], "discounting", "--resume-anyway"]) == 0
    raw = [json.loads(line) for line in out.with_suffix(".raw.jsonl").read_text().splitlines()]
    assert [r["labelled_with"]["method"] for r in raw] == ["discounting", "discounting"]
