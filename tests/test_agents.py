from __future__ import annotations

import json

import pytest

from agents.engine import SamplingParams
from agents.llm_agent import HumanAgent, LLMAgent, parse_reply
from agents.runner import EpisodeJob, jobs_for, run_episodes
from agents.spec import PolicySpec, parse_spec
from benchmarks.cli import main
from sotopia_env import ActionType, EpisodeStart, SocialParallelEnv, read_episodes, split


@pytest.mark.parametrize(
    ("reply", "action_type", "argument", "repaired"),
    [
        ("I can do $400.", ActionType.speak, "I can do $400.", False),
        ('Ben said: "I can do $400."', ActionType.speak, "I can do $400.", True),
        ("Ben Kowalski: Fine.\nAmara Okafor: No!", ActionType.speak, "Fine.", True),
        ('{"action_type": "leave", "argument": ""}', ActionType.leave, "", False),
        (
            'Sure. {"action_type": "non-verbal communication", "argument": "smiles"}',
            ActionType.non_verbal,
            "smiles",
            True,
        ),
        ('{"action_type": "dance", "argument": "twirls"}', ActionType.speak, "twirls", True),
        ('{"action_type": "action", "argument": {"x": 1}}', ActionType.action, '{"x": 1}', True),
        ("{not json at all}", ActionType.speak, "{not json at all}", True),
        ("   ", ActionType.none, "", True),
        ("", ActionType.none, "", True),
    ],
)
def test_parse_reply_is_tolerant_and_records_repairs(reply, action_type, argument, repaired):
    action = parse_reply(reply, speaker="Ben Kowalski")
    assert action.action_type is action_type and action.argument == argument
    assert bool(action.repairs) is repaired


def test_parse_reply_cuts_over_long_replies():
    action = parse_reply("x" * 50, max_chars=10)
    assert action.argument == "x" * 10 and action.repairs == ("cut to 10 characters",)


def test_agent_repairs_are_written_into_the_episode():
    env = SocialParallelEnv()
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": parse_reply('"Hello there."')})
    assert env.episode.turns[0].repairs == ["removed surrounding quotes"]


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("embedded", PolicySpec("embedded", "embedded")),
        ("embedded+lora:runs/a", PolicySpec("embedded", "embedded", "runs/a")),
        ("hf:org/model+lora:/x/y", PolicySpec("hf", "org/model", "/x/y")),
        ("vllm:embedded", PolicySpec("vllm", "embedded")),
        ("openai:gpt-4o@http://127.0.0.1:8000/v1", PolicySpec("openai", "gpt-4o", None, "http://127.0.0.1:8000/v1")),
        (
            "openai:smollm2@http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1+tokenizer:embedded",
            PolicySpec(
                "openai", "smollm2", None, "http://10.0.0.1:8000/v1,http://10.0.0.2:8000/v1", tokenizer="embedded"
            ),
        ),
        ("scripted:Hi.|Deal?", PolicySpec("scripted", lines=("Hi.", "Deal?"))),
        ("human", PolicySpec("human")),
    ],
)
def test_policy_specs_parse(text, spec):
    assert parse_spec(text) == spec


@pytest.mark.parametrize(
    "bad",
    [
        "gpt4",
        "openai:gpt-4o",
        "hf:",
        "embedded+lora:",
        "embedded:x",
        "openai:m@http://a:8000/v1,",  # a fleet's URLs: each an http(s) URL, each once
        "openai:m@http://a:8000/v1,a:8001/v1",
        "openai:m@http://a:8000/v1,http://a:8000/v1",
    ],
)
def test_bad_policy_specs_say_what_to_write(bad):
    with pytest.raises(ValueError, match="policy spec"):
        parse_spec(bad)


def test_llm_agent_on_the_embedded_model_plays_batched_episodes(transformers_engine, tmp_path):
    agent = LLMAgent(transformers_engine, SamplingParams(max_new_tokens=16, seed=0))
    jobs = jobs_for(split("hard")[:3], pairs_per_scenario=1, seed=0)
    out = tmp_path / "eps.jsonl"
    new = run_episodes(jobs, (agent, agent), out, batch_size=3, env_kwargs={"max_turns": 4}, progress=False)
    episodes = read_episodes(out)
    assert len(new) == len(episodes) == 3 and {e.id for e in episodes} == {j.id for j in jobs}
    assert agent.calls == 4  # 4 rounds, each one generate call for all three episodes
    for ep in episodes:
        assert ep.agent_models == {"agent_0": "SmolLM2-135M-Instruct", "agent_1": "SmolLM2-135M-Instruct"}
        # Round-robin from seat 0, and the recorded end matches how the dialogue stopped.
        assert [t.agent for t in ep.turns] == ["agent_0", "agent_1", "agent_0", "agent_1"][: len(ep.turns)]
        ended_by = {"turn_limit": len(ep.turns) == 4, "leave": ep.turns[-1].action_type == "leave"}
        assert ended_by.get(ep.end_reason, False), (ep.end_reason, [t.action_type for t in ep.turns])


def test_human_agent_commands():
    answers = iter(["", "hello there", "/nv waves", "/do opens the door", "/pass", "/leave"])
    agent = HumanAgent(input_fn=lambda _: next(answers), print_fn=lambda *_: None)
    obs = {"prompt": "p"}
    got = [agent.act(obs) for _ in range(5)]
    assert [(a.action_type, a.argument) for a in got] == [
        (ActionType.speak, "hello there"),
        (ActionType.non_verbal, "waves"),
        (ActionType.action, "opens the door"),
        (ActionType.none, ""),
        (ActionType.leave, ""),
    ]


def test_episode_command_with_scripted_agents_prints_and_records(tmp_path, capsys):
    out = tmp_path / "eps.jsonl"
    code = main(
        [
            "episode",
            "--scenario",
            "neg-used-bike",
            "--characters",
            "ben_kowalski,amara_okafor",
            "--agent0",
            "scripted:It is $480.|Fine, $430.",
            "--agent1",
            "scripted:Too much.",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert 'Ben Kowalski said: "It is $480."' in printed and "Amara Okafor left the conversation." in printed
    [episode] = read_episodes(out)
    assert episode.end_reason == "leave" and episode.agent_models["agent_0"] == "scripted"
    assert json.loads(out.read_text())["scenario"]["id"] == "neg-used-bike"


def test_episode_ids_are_deterministic_per_job():
    job = EpisodeJob(EpisodeStart("s", 3, characters=("a", "b")))
    assert job.id == "s|a|b|3" and EpisodeJob(EpisodeStart("s", 3, characters=("a", "b")), tag="x").id == "s|a|b|3|x"
