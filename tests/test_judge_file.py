"""`judge_file`: the one way a file of episodes is judged (CLI `judge`, pipeline, labelling, benchmark).

A judge model that fails on chosen episodes and then recovers cannot be had from a real model on demand,
so these tests use `ScriptedJudgeModel`: an engine that answers each judge request with the top score of
every dimension, built from the request's schema, except the requests a test marks as failing, which get
prose that no validator accepts. It counts what it is asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from agents.engine import Messages, Sample, SamplingParams
from benchmarks.cli import main
from rewards.judge import Judge, judge_file
from sotopia_env import Episode, SocialParallelEnv, read_episodes
from sotopia_env.episode import write_episode


class ScriptedJudgeModel:
    model_name = "scripted-judge"

    def __init__(self) -> None:
        self.fails: Callable[[Messages], bool] = lambda conv: False
        self.seen: list[Messages] = []

    def generate(self, conversations: list[Messages], params: SamplingParams) -> list[list[Sample]]:
        self.seen += conversations
        props = params.json_schema["properties"]
        best = {d: {"reasoning": "scripted", "score": p["properties"]["score"]["maximum"]} for d, p in props.items()}
        return [[Sample("No comment." if self.fails(c) else json.dumps(best))] for c in conversations]

    def load_adapter(self, path: str) -> None:
        raise NotImplementedError("the scripted judge has no adapters")


def episode(episode_id: str, opening: str) -> Episode:
    env = SocialParallelEnv(max_turns=4)
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": opening})
    env.step({"agent_1": "Too much. $300?"})
    env.step({"agent_0": {"action_type": "leave"}})
    ep = env.episode
    ep.id = episode_id
    return ep


def setup(tmp_path):
    episodes = tmp_path / "episodes.jsonl"
    write_episode(episodes, episode("bike|1", "It is $480."))
    write_episode(episodes, episode("bike|2", "Ten dollars off, final."))
    model = ScriptedJudgeModel()
    return episodes, model, Judge(model, cache_path=tmp_path / "cache.jsonl", max_attempts=2)


def test_each_episode_is_judged_once_and_a_rerun_asks_the_model_nothing(tmp_path):
    episodes, model, judge = setup(tmp_path)
    out = tmp_path / "judged.jsonl"
    first = judge_file(judge, episodes, out, batch_size=1, progress=False)
    assert [e.id for e in first] == ["bike|1", "bike|2"] and len(model.seen) == 4  # 2 episodes x 2 agents
    assert all(e.judge_scores[a]["goal"] == 10.0 for e in first for a in e.agents)
    assert read_episodes(out) == first
    model.seen = []
    assert judge_file(judge, episodes, out, progress=False) == first and model.seen == []


def test_a_failed_episode_is_judged_again_on_the_next_run_and_the_file_keeps_one_line_each(tmp_path):
    episodes, model, judge = setup(tmp_path)
    out = tmp_path / "judged.jsonl"
    model.fails = lambda conv: "Ten dollars off" in conv[-1]["content"]
    first = judge_file(judge, episodes, out, progress=False)
    assert first[1].judge_scores == {} and len(first[1].judge_failures) == 2
    model.fails, model.seen = (lambda conv: False), []
    second = judge_file(judge, episodes, out, progress=False)
    assert len(model.seen) == 2 and all("Ten dollars off" in c[-1]["content"] for c in model.seen)
    assert second[0] == first[0] and set(second[1].judge_scores) == {"agent_0", "agent_1"}
    assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == ["bike|1", "bike|2"]


def test_only_the_agents_asked_for_are_judged_and_asking_for_more_later_judges_the_rest(tmp_path):
    episodes, model, judge = setup(tmp_path)
    out = tmp_path / "judged.jsonl"
    seat0 = {"bike|1": ["agent_0"], "bike|2": ["agent_0"]}
    first = judge_file(judge, episodes, out, agents=seat0, progress=False)
    assert len(model.seen) == 2 and all(set(e.judge_scores) == {"agent_0"} for e in first)
    model.seen = []
    both = judge_file(judge, episodes, out, agents={"bike|1": ["agent_0", "agent_1"]}, progress=False)
    # bike|1 now wants agent_1 too: agent_0's answer is in the judge's cache, so one call; bike|2 (all of
    # its agents by default) likewise.
    assert len(model.seen) == 2 and all(set(e.judge_scores) == {"agent_0", "agent_1"} for e in both)


def test_a_judge_factory_is_called_only_when_something_is_left_to_judge(tmp_path):
    episodes, model, judge = setup(tmp_path)
    out = tmp_path / "judged.jsonl"
    made = []

    def make() -> Judge:
        made.append(1)
        return judge

    judge_file(make, episodes, out, progress=False)
    judge_file(make, episodes, out, progress=False)
    assert made == [1]


def test_a_batch_holding_one_id_twice_is_refused_before_anything_is_judged(tmp_path):
    """Scores are matched to episodes by id: two dialogues under one id would both get the later one's."""
    episodes = tmp_path / "merged.jsonl"
    write_episode(episodes, episode("bike|1", "It is $480."))
    write_episode(episodes, episode("bike|1", "Ten dollars off, final."))  # another run's dialogue, same id
    model = ScriptedJudgeModel()
    judge = Judge(model, cache_path=tmp_path / "cache.jsonl")
    with pytest.raises(ValueError, match=r"merged\.jsonl: episodes 1 and 2 share the id 'bike\|1'"):
        judge_file(judge, episodes, tmp_path / "judged.jsonl", progress=False)
    assert model.seen == [] and not (tmp_path / "judged.jsonl").exists()


def test_each_judged_episode_carries_the_settings_that_judged_it(tmp_path):
    episodes, model, judge = setup(tmp_path)
    judged = judge_file(judge, episodes, tmp_path / "judged.jsonl", progress=False)
    settings = {"judge_model": "scripted-judge", "prompt_version": "judge-v1", "max_new_tokens": 900, "max_attempts": 2}
    assert [e.meta["judged_with"] for e in read_episodes(tmp_path / "judged.jsonl")] == [settings, settings]
    assert judged[0].meta["judged_with"] == settings


def test_a_judge_rerun_with_another_judge_is_refused_before_the_judge_starts(tmp_path, capsys, monkeypatch):
    """`sotopia-env judge` with the scripted judge model in place of the engine its spec names."""
    import rewards.cli

    episodes, model, judge = setup(tmp_path)
    started = []
    monkeypatch.setattr(rewards.cli, "judge_from_spec", lambda spec, cache, dimensions: started.append(spec) or judge)
    out = tmp_path / "judged.jsonl"
    assert main(["judge", "--episodes", str(episodes), "--out", str(out), "--judge", "vllm:embedded"]) == 0
    assert main(["judge", "--episodes", str(episodes), "--out", str(out), "--judge", "vllm:embedded"]) == 0
    assert started == ["vllm:embedded"] and len(model.seen) == 4  # 2 episodes x 2 agents; the rerun asked nothing
    capsys.readouterr()
    assert main(["judge", "--episodes", str(episodes), "--out", str(out), "--judge", "openai:gpt-4o@http://x"]) == 2
    error = capsys.readouterr().err
    assert f"{out} was made with other settings (judge: 'vllm:embedded' -> 'openai:gpt-4o@http://x';" in error
    assert started == ["vllm:embedded"]


def test_an_answer_holding_nan_is_an_invalid_answer_never_cached(tmp_path):
    episodes, model, judge = setup(tmp_path)

    class NaNAnswers(ScriptedJudgeModel):
        def generate(self, conversations, params):
            return [
                [Sample(s[0].text.replace('"score"', '"confidence": NaN, "score"'))]
                for s in super().generate(conversations, params)
            ]

    judge.engine = NaNAnswers()
    judged = judge_file(judge, episodes, tmp_path / "judged.jsonl", progress=False)
    assert all(e.judge_scores == {} for e in judged)
    assert all("unparseable answer: NaN is not a JSON number" in f for e in judged for f in e.judge_failures)
    assert not (tmp_path / "cache.jsonl").exists() or "NaN" not in (tmp_path / "cache.jsonl").read_text()
