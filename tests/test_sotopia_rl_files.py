"""Sotopia-RL's reward-model and GRPO JSON files: written from our labels and episodes, read back by
`train-rm --data` and `grpo --prompts`."""

from __future__ import annotations

import json

import pytest

from benchmarks.cli import main
from rewards.sotopia_rl import grpo_records, is_rm_file, read_prompts, read_rm_file, rm_records
from sotopia_env import SocialParallelEnv
from sotopia_env.episode import write_episode, write_jsonl_atomic
from sotopia_env.replay import utterance_states
from trainers.train_reward_model import load_rows

LABELS = [
    {"episode_id": "e1", "prompt": "Scenario: a bike sale\nTurn 0", "utterance": "It is $480.", "label": 7.5},
    {"episode_id": "e1", "prompt": "Scenario: a bike sale\nTurn 1", "utterance": "Too much.", "label": 2.0},
    {"episode_id": "e2", "prompt": "Scenario: rent\nTurn 0", "utterance": "Hi.", "label": None},  # not normalised
]


def test_labels_export_to_sotopia_rl_reward_model_records_and_read_back_as_training_rows(tmp_path):
    assert rm_records(LABELS) == [
        {"input": "Scenario: a bike sale\nTurn 0", "output": "It is $480.", "value": 7.5},
        {"input": "Scenario: a bike sale\nTurn 1", "output": "Too much.", "value": 2.0},
    ]
    labels = tmp_path / "labels.jsonl"
    write_jsonl_atomic(labels, LABELS)
    assert (
        main(["export-sotopia-rl", "--labels", str(labels), "--state-key", "instruction", "--out", str(tmp_path)]) == 0
    )
    written = json.loads((tmp_path / "reward_model.json").read_text())
    assert [sorted(r) for r in written] == [["instruction", "output", "value"]] * 2
    assert is_rm_file(tmp_path / "reward_model.json") and not is_rm_file(labels)
    back = [{"prompt": r["prompt"], "utterance": r["utterance"], "label": r["label"]} for r in LABELS[:2]]
    assert read_rm_file(tmp_path / "reward_model.json") == back
    assert load_rows(tmp_path / "reward_model.json") == back  # what train-rm --data trains on


def test_a_sotopia_rl_reward_model_file_with_a_bad_value_names_the_record(tmp_path):
    path = tmp_path / "rm.json"
    path.write_text(
        json.dumps([{"input": "s", "output": "u", "value": 1}, {"input": "s", "output": "u", "value": "high"}])
    )
    with pytest.raises(ValueError, match=r"rm.json: record 1: 'value' must be a number"):
        read_rm_file(path)


def test_a_nan_or_infinite_value_in_a_sotopia_rl_file_is_reported_by_file_and_line_not_trained_on(tmp_path):
    path = tmp_path / "rm.json"
    path.write_text('[\n {"input": "s", "output": "u", "value": 1},\n {"input": "s", "output": "u", "value": NaN}\n]')
    with pytest.raises(ValueError, match=r"rm\.json: line 3: NaN is not a JSON number"):
        read_rm_file(path)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        '{"prompt": "s", "utterance": "u", "label": 1.0}\n{"prompt": "s", "utterance": "u", "label": Infinity}\n'
    )
    with pytest.raises(ValueError, match=r"rows\.jsonl: line 2: Infinity is not a JSON number"):
        load_rows(rows)


def test_episode_states_export_to_sotopia_rl_grpo_records_and_read_back_as_grpo_prompts(tmp_path):
    env = SocialParallelEnv(max_turns=4)
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": "It is $480."})
    env.step({"agent_1": {"action_type": "non-verbal communication", "argument": "frowns"}})
    env.step({"agent_0": {"action_type": "leave"}})
    episodes = tmp_path / "episodes.jsonl"
    write_episode(episodes, env.episode)
    states = utterance_states(env.episode)
    assert grpo_records([env.episode]) == [
        {"input": states[0].prompt, "output": "It is $480."},
        {"input": states[1].prompt, "output": "frowns"},
    ]
    assert main(["export-sotopia-rl", "--episodes", str(episodes), "--out", str(tmp_path)]) == 0
    assert read_prompts(tmp_path / "grpo.json") == [states[0].prompt, states[1].prompt]
    ours = tmp_path / "prompts.jsonl"  # our own prompts format still reads
    write_jsonl_atomic(ours, [{"prompt": "a state"}])
    assert read_prompts(ours) == ["a state"]


def test_export_without_labels_or_episodes_says_which_flags_to_give(capsys):
    assert main(["export-sotopia-rl", "--out", "x"]) == 2
    assert "give --labels, --episodes or both" in capsys.readouterr().err


@pytest.mark.slow
def test_grpo_trains_on_the_states_of_a_sotopia_rl_grpo_file(embedded_dir, tmp_path):
    from rewards.reward_model import RewardModel, RewardModelConfig

    records = [
        {"input": f'Scenario: a bike sale.\nTurn {k}: Ben said: "${480 - 20 * k}?"', "output": "No."} for k in range(4)
    ]
    (tmp_path / "grpo.json").write_text(json.dumps(records))
    RewardModel.create(RewardModelConfig(max_length=320)).save(tmp_path / "rm")
    args = ["grpo", "--reward-model", str(tmp_path / "rm"), "--prompts", str(tmp_path / "grpo.json")]
    args += ["--out", str(tmp_path / "grpo"), "--steps", "1", "--prompts-per-step", "2", "--group-size", "2"]
    args += ["--max-new-tokens", "8", "--max-prompt-tokens", "320", "--lora-layers", "2", "--heldout-states", "2"]
    assert main([*args, "--eval-samples", "1", "--no-tensorboard"]) == 0
    # Four states: two held out, the step's two drawn from the other two.
    assert [json.loads(line)["step"] for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()] == [1]
