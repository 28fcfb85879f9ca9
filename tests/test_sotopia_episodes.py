"""Importing Sotopia's episodes (native EpisodeLog and the released JSONL) and running the chain on them.

The fixtures in tests/fixtures/sotopia_episodes are written for this project in Sotopia's formats: the
EpisodeLog file plays the profile fixtures' environment 01ENVAAAA (Mira Solberg, Tobias Wren) with Sotopia's
round-robin layout (the waiting agent "did nothing", Environment observations after each step); the
released JSONL has three episodes of an environment with no profile given, one played simultaneously, and a
line cut short.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.cli import main
from rewards.attribution import AttributionConfig
from rewards.dimensions import NAMES
from rewards.labeling import label_episodes
from sotopia_env import SocialParallelEnv, read_episodes
from sotopia_env.episode import to_sotopia_episode_log, write_jsonl_atomic
from sotopia_env.replay import utterance_states
from sotopia_env.sotopia_episodes import SOTOPIA_DIMENSIONS, episode_from_record, import_episodes, parse_action
from sotopia_env.sotopia_import import import_sotopia
from trainers.bc import select_top


@pytest.fixture
def files(fixtures):
    profiles = sorted((fixtures / "sotopia").iterdir())
    folder = fixtures / "sotopia_episodes"
    return profiles, folder / "EpisodeLog.json", folder / "sotopia_episodes_v1.jsonl"


@pytest.fixture
def imported(files):
    profiles, log, released = files
    result = import_episodes([log, released], import_sotopia(profiles))
    return {e.id: e for e in result.episodes}, result.problems


def turns(episode):
    return [(t.index, t.agent, t.action_type, t.argument) for t in episode.turns]


def test_sotopias_dimension_names_are_our_judges():
    assert SOTOPIA_DIMENSIONS == NAMES


def test_each_of_sotopias_action_texts_maps_to_our_action_type():
    assert parse_action('said: "Fine, "deal"."') == ("speak", 'Fine, "deal".')
    assert parse_action("did nothing") == ("none", "")
    assert parse_action("left the conversation") == ("leave", "")
    assert parse_action("[non-verbal communication] nods") == ("non-verbal communication", "nods")
    assert parse_action("[action] pays $20") == ("action", "pays $20")
    with pytest.raises(ValueError, match="none of Sotopia's forms"):
        parse_action('shouted "Hey"')


def test_an_episode_log_with_its_profiles_gets_their_scenario_characters_and_its_turns_scores_and_models(imported):
    episodes, _ = imported
    ep = episodes["01EPLOG0001"]
    assert ep.scenario.id == "01ENVAAAA" and ep.scenario.hard and ep.scenario.relationship.value == "friend"
    assert [c.id for c in ep.characters] == ["01agta", "01agtb"]
    assert ep.meta["sotopia"]["rebuilt"] == [] and ep.meta["turn_mode"] == "round-robin"
    # The context turn, the waiting agent's "did nothing" and the Environment's observations are not turns.
    assert turns(ep) == [
        (
            0,
            "agent_0",
            "speak",
            "Tobias, the tent came back with a rip along the door. I think you owe me something for it.",
        ),
        (1, "agent_1", "speak", "I noticed the zip was stiff, but the rip? I can patch it this weekend."),
        (2, "agent_0", "non-verbal communication", "crosses her arms and shakes her head"),
        (3, "agent_1", "speak", "Fine. I can put $40 toward a new one, and patch the old one for spares."),
        (4, "agent_0", "speak", "Make it $60 and we are even."),
        (5, "agent_1", "leave", ""),
    ]
    assert ep.end_reason == "leave"
    assert ep.judge_scores["agent_0"] == dict(zip(NAMES, [8.0, 1.0, 4.0, 0.0, 0.0, 1.0, 6.0]))
    assert ep.judge_scores["agent_1"]["goal"] == 5.0 and ep.meta["sotopia"]["overall"]["agent_0"] == 2.86
    assert ep.agent_models == {"agent_0": "gpt-4", "agent_1": "gpt-3.5-turbo"} and ep.judge_model == "gpt-4"
    # Two trailing steps where nobody spoke: Sotopia's stale-turn end.
    assert episodes["01EPLOG0002"].end_reason == "silence"


def test_released_episodes_without_profiles_are_rebuilt_from_their_own_text_and_say_so(imported):
    episodes, _ = imported
    ep = episodes["01REL0001"]
    assert ep.meta["sotopia"]["rebuilt"] == ["scenario", "character 0", "character 1"]
    assert ep.meta["sotopia"]["format"] == "released"
    assert ep.scenario.situation.startswith("A bakery owner and a regular customer")
    assert ep.scenario.roles[0].goal == (
        "Keep Omar as a customer without giving a refund "
        "(Extra information: Refunds come out of your own pocket this month.)"
    )
    lena, omar = ep.characters
    assert (lena.name, lena.age, lena.occupation, lena.pronouns, lena.gender) == (
        "Lena Park",
        52,
        "bakery owner",
        "She/her",
        "female",
    )
    assert lena.secret == "She skipped a hygiene inspection last month."
    assert lena.personality == "Lena is proud of her craft and hates waste."
    assert lena.public_info == "Runs the corner bakery since 1998."
    assert (omar.age, omar.occupation, omar.secret) == (27, "nurse", "")
    assert ep.agent_models == {"agent_0": "gpt-4", "agent_1": "gpt-4"}


def test_an_episode_log_without_profiles_reads_scenario_background_and_goal_from_its_context_turn(files):
    _, log, _ = files
    ep = import_episodes([log]).episodes[0]
    assert ep.meta["sotopia"]["rebuilt"] == ["scenario", "character 0", "character 1"]
    assert ep.scenario.situation == (
        "Two campers share a campsite; one borrowed the other's tent last summer and returned it torn."
    )
    # Each agent's goal from the context sent to it (the partner's reads "Unknown" there).
    assert ep.scenario.roles[1].goal.startswith("Avoid paying more than $50 (Strategy hint:")
    mira, tobias = ep.characters
    assert (mira.age, mira.occupation, mira.secret) == (31, "park ranger", "She lost a hiker once.")
    assert (tobias.age, tobias.occupation, tobias.personality) == (45, "glassblower", "Tobias is careful and quiet.")


def test_unparseable_records_are_reported_by_file_and_line_and_the_rest_are_imported(imported, files):
    episodes, problems = imported
    _, log, released = files
    assert sorted(episodes) == ["01EPLOG0001", "01EPLOG0002", "01REL0001", "01REL0002", "01REL0003"]
    assert len(problems) == 2
    assert problems[0].startswith(f"{log}: record 2: turn 1, Mira Solberg: action text 'shouted")
    assert problems[1].startswith(f"{released}: line 2: not valid JSON")


def test_steps_in_which_both_agents_act_import_as_simultaneous_and_replay_every_utterance(imported):
    episodes, _ = imported
    ep = episodes["01REL0003"]
    assert ep.meta["turn_mode"] == "simultaneous"
    assert [(t.index, t.agent, t.action_type) for t in ep.turns] == [
        (0, "agent_0", "speak"),
        (0, "agent_1", "speak"),
        (1, "agent_0", "speak"),
        (1, "agent_1", "speak"),
        (2, "agent_0", "speak"),
        (2, "agent_1", "leave"),
    ]
    states = utterance_states(ep)
    assert len(states) == 5  # every utterance has its state; the leave is not an utterance
    assert "Of course, tell me." in states[-1].prompt and states[-1].action.argument == "Take this loaf, on the house."


def test_our_own_episode_log_export_imports_back_to_the_same_turns_and_scores():
    env = SocialParallelEnv(max_turns=6)
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": "It is $480, firm."})
    env.step({"agent_1": {"action_type": "non-verbal communication", "argument": "raises an eyebrow"}})
    env.step({"agent_0": {"action_type": "action", "argument": "lowers the seat"}})
    env.step({"agent_1": {"action_type": "leave"}})
    original = env.episode
    original.judge_scores = {a: dict(zip(NAMES, [7, 1, 2, 0, 0, 1, g])) for a, g in zip(original.agents, (6, 3))}
    back = episode_from_record(json.loads(json.dumps(to_sotopia_episode_log(original))))
    assert turns(back) == turns(original)
    assert back.judge_scores == original.judge_scores and back.id == original.id
    assert back.scenario.situation == original.scenario.situation
    assert [r.goal for r in back.scenario.roles] == [r.goal for r in original.scenario.roles]
    assert [c.name for c in back.characters] == [c.name for c in original.characters]


def test_top_fraction_and_the_model_filter_select_among_imported_episodes(imported):
    episodes, _ = imported
    kept = select_top(list(episodes.values()), 0.5, models=["gpt-4"])
    # 01ENVAAAA, gpt-4 seats: goals 6 (LOG1 a0), 3 (LOG2 a0) -> top 1. 01ENVBAKE, gpt-4 seats: 8 (REL1 a0),
    # 7 (REL1 a1), 5 (REL2 a1), 6 (REL3 a0), 8 (REL3 a1) -> top ceil(2.5) = 3, ties by id.
    assert sorted((e.id, a) for e, a in kept) == [
        ("01EPLOG0001", "agent_0"),
        ("01REL0001", "agent_0"),
        ("01REL0001", "agent_1"),
        ("01REL0003", "agent_1"),
    ]
    # Without the filter LOG2's gpt-3.5 seat (goal 6) ties for the top of 01ENVAAAA's four.
    assert ("01EPLOG0002", "agent_1") in {(e.id, a) for e, a in select_top(list(episodes.values()), 0.5)}


def test_import_sotopia_writes_the_library_and_the_episodes_and_reports_what_it_skipped(files, tmp_path, capsys):
    profiles, log, released = files
    out = tmp_path / "lib"
    assert main(["import-sotopia", *map(str, profiles), str(log), str(released), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "line 2: not valid JSON" in err and "record 2" in err
    assert {p.name for p in out.iterdir()} == {"scenarios.jsonl", "characters.jsonl", "pairings.json", "episodes.jsonl"}
    assert len(read_episodes(out / "episodes.jsonl")) == 5
    # Episodes alone, completed by the library written above: nothing rebuilt, the library left as it was.
    again = tmp_path / "again"
    assert main(["import-sotopia", str(log), "--library", str(out), "--out", str(again)]) == 0
    assert [e.meta["sotopia"]["rebuilt"] for e in read_episodes(again / "episodes.jsonl")] == [[], []]
    assert {p.name for p in again.iterdir()} == {"episodes.jsonl"}


class MaxScoreJudgeModel:
    """A judge model that gives every dimension the top of its range and rates each utterance 1 of 3. A real
    model's scores cannot be known in advance, and this test must tell our judge's G from the imported one."""

    model_name = "max-score-judge"

    def generate(self, conversations, params, seeds=None):
        props = params.json_schema["properties"]
        if all(p["type"] == "array" for p in props.values()):
            answer = {d: [1] * p["minItems"] for d, p in props.items()}
        else:
            answer = {d: {"reasoning": "-", "score": p["properties"]["score"]["maximum"]} for d, p in props.items()}
        from agents.engine import Sample

        return [[Sample(json.dumps(answer))] for _ in conversations]

    def load_adapter(self, path):
        raise NotImplementedError


def test_label_keeps_imported_scores_as_g_unless_asked_to_rejudge(imported, tmp_path):
    from rewards.judge import Judge

    episodes, _ = imported
    path = tmp_path / "episodes.jsonl"
    write_jsonl_atomic(path, [episodes["01EPLOG0001"]])
    config = AttributionConfig(method="uniform", dims=("goal",))
    label_episodes(path, tmp_path / "kept.jsonl", None, config, progress=False)
    kept = [json.loads(line) for line in (tmp_path / "kept.jsonl").read_text().splitlines()]
    # uniform: every utterance gets its speaker's G; Mira's imported goal is 6, Tobias's 5.
    assert sorted({(r["agent"], r["dims"]["goal"]) for r in kept}) == [("agent_0", 6.0), ("agent_1", 5.0)]
    judge = Judge(MaxScoreJudgeModel(), cache_path=tmp_path / "judge_cache.jsonl")
    label_episodes(path, tmp_path / "rejudged.jsonl", judge, config, progress=False, rejudge=True)
    rejudged = [json.loads(line) for line in (tmp_path / "rejudged.jsonl").read_text().splitlines()]
    assert {r["dims"]["goal"] for r in rejudged} == {10.0} and len(rejudged) == len(kept) == 5
    with pytest.raises(ValueError, match="rejudge needs a judge"):
        label_episodes(path, tmp_path / "x.jsonl", None, config, progress=False, rejudge=True)


@pytest.mark.slow
def test_imported_episodes_run_through_label_train_rm_and_bc(files, tmp_path, embedded_dir, capsys):
    profiles, log, released = files
    lib = tmp_path / "lib"
    assert main(["import-sotopia", *map(str, profiles), str(log), str(released), "--out", str(lib)]) == 0
    episodes, labels, export = lib / "episodes.jsonl", tmp_path / "labels.jsonl", tmp_path / "srl"
    # The imported scores are each dimension's G: no judge model runs.
    assert main(["label", "--episodes", str(episodes), "--out", str(labels), "--judge", "", "--method", "uniform"]) == 0
    rows = [json.loads(line) for line in labels.read_text().splitlines()]
    assert len(rows) == 23  # every utterance of the five episodes: 5 + 4 + 4 + 5 + 5
    assert main(["export-sotopia-rl", "--labels", str(labels), "--out", str(export)]) == 0
    rm_args = ["--epochs", "1", "--batch-size", "8", "--max-length", "256", "--lora-layers", "2", "--eval-every", "2"]
    assert main(["train-rm", "--data", str(export / "reward_model.json"), "--out", str(tmp_path / "rm"), *rm_args]) == 0
    rm = json.loads((tmp_path / "rm" / "summary.json").read_text())
    # 23 rows without episode ids, split by dialogue (scenario and pair, read off each state): the five episodes
    # are two such dialogues, the campers' 9 rows and the bakery's 14. One is held out whole (max(1, round(0.2 x
    # 2))), the bakery's with this seed: 9 rows trained in ceil(9 / 8) = 2 steps.
    assert (rm["train_rows"], rm["heldout_rows"], rm["steps"]) == (9, 14, 2)
    assert (tmp_path / "rm" / "best" / "adapter_config.json").exists()
    bc_args = ["--epochs", "1", "--batch-size", "4", "--max-length", "320", "--lora-layers", "2"]
    out = tmp_path / "bc"
    assert (
        main(
            [
                "bc",
                "--episodes",
                str(episodes),
                "--top-fraction",
                "0.5",
                "--models",
                "gpt-4",
                "--out",
                str(out),
                *bc_args,
            ]
        )
        == 0
    )
    bc = json.loads((out / "summary.json").read_text())
    # The four gpt-4 seats of test_top_fraction_and_the_model_filter_select_among_imported_episodes, with
    # 3 + 2 + 2 + 2 utterances: 9 examples, ceil(9 / 4) = 3 steps.
    assert (bc["pairs"], bc["examples"], bc["steps"]) == (4, 9, 3)
    assert (out / "adapter" / "adapter_config.json").exists()


def test_a_bad_byte_a_nan_or_a_line_separator_costs_at_most_its_own_line(files, tmp_path):
    """Lines split on "\\n" only: U+2028 inside a record is text (splitlines() cut the record there); a byte
    that is not UTF-8 costs its line, not the file; NaN is reported by file and line, not imported."""
    _, _, released = files
    good = [line for line in released.read_bytes().split(b"\n") if line.startswith(b'{"episode_id": "01REL000')]
    first = json.loads(good[0])
    first["scenario"] += "\u2028It rained."
    nan = good[1].replace(b'"raw_rewards": ', b'"raw_rewards": NaN, "unused": ', 1)
    path = tmp_path / "dump.jsonl"
    path.write_bytes(
        json.dumps(first, ensure_ascii=False).encode()
        + b"\n"
        + good[1].replace(b'"experiment_tag": "', b'"experiment_tag": "\xff', 1)
        + b"\n"
        + nan
        + b"\n"
        + good[2]
    )
    result = import_episodes([path])
    assert [e.id for e in result.episodes] == ["01REL0001", "01REL0003"]
    assert result.episodes[0].scenario.situation.endswith("\u2028It rained.")
    assert result.problems == [
        f"{path}: line 2: not valid JSON (not UTF-8); skipped",
        f"{path}: line 3: NaN is not a JSON number (a writer let a non-finite value through); skipped",
    ]
