"""Provenance (sotopia_env.provenance): the settings an output was made with are recorded beside it the first
time, a rerun with other settings is refused naming each field unless overridden, and the run id that names
the output's records is made once and kept."""

from __future__ import annotations

import json
import multiprocessing as mp

import pytest

from sotopia_env.jsonio import append_jsonl, read_json
from sotopia_env.provenance import RUN_ID, check_same_settings, settings_beside

SETTINGS = {"method": "direct", "dims": ("goal", "knowledge"), "gamma": 0.9, "batch_size": 8}


def test_the_first_run_records_its_settings_and_a_rerun_with_others_is_refused_naming_each_field(tmp_path):
    out = tmp_path / "labels.jsonl"
    file = settings_beside(out)
    run_id = check_same_settings(out, file, SETTINGS, ignore=("batch_size",))
    assert file.name == "labels.settings.json" and len(run_id) == 8
    assert read_json(file) == {
        "method": "direct",
        "dims": ["goal", "knowledge"],
        "gamma": 0.9,
        "batch_size": 8,
        RUN_ID: run_id,
    }
    append_jsonl(out, {"id": "a"})  # the run made something
    # The same settings (tuples read back as lists) and an ignored field's change: the same run, same id.
    assert check_same_settings(out, file, {**SETTINGS, "batch_size": 32}, ignore=("batch_size",)) == run_id
    assert read_json(file)["batch_size"] == 32  # the latest value of an ignored field is recorded
    with pytest.raises(
        ValueError,
        match=r"labels\.jsonl was made with other settings \(method: 'direct' -> 'scaled'; gamma: 0\.9 -> 0\.5; "
        r"recorded in .*labels\.settings\.json\); use a new --out, or pass --resume-anyway to continue it",
    ):
        check_same_settings(out, file, {**SETTINGS, "method": "scaled", "gamma": 0.5}, ignore=("batch_size",))
    assert read_json(file)["method"] == "direct"


def test_resume_anyway_continues_with_a_warning_and_records_the_new_settings_keeping_the_run_id(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    run_id = check_same_settings(out, out / "config.json", SETTINGS)
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    assert check_same_settings(out, out / "config.json", {**SETTINGS, "gamma": 0.5}, override=True) == run_id
    assert "warning: " in capsys.readouterr().err and read_json(out / "config.json")["gamma"] == 0.5


def test_an_output_holding_nothing_yet_takes_new_settings_and_one_from_before_the_check_gets_no_run_id(
    tmp_path, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    first = check_same_settings(out, out / "config.json", SETTINGS)  # then the run failed before making anything
    assert check_same_settings(out, out / "config.json", {**SETTINGS, "gamma": 0.5}) == first
    assert capsys.readouterr().err == ""
    old = tmp_path / "episodes.jsonl"
    append_jsonl(old, {"id": "scenario|a|b|0"})  # written before settings were recorded: ids without a run id
    assert check_same_settings(old, settings_beside(old), SETTINGS) == ""
    assert "has no record of the settings it was made with" in capsys.readouterr().err
    assert check_same_settings(old, settings_beside(old), SETTINGS) == ""  # and it stays so on every rerun


def _start(out: str, queue) -> None:
    queue.put(check_same_settings(out, settings_beside(out), SETTINGS))


def test_processes_starting_one_run_together_agree_on_one_run_id(tmp_path):
    out = str(tmp_path / "trl_episodes.jsonl")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_start, args=(out, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    ids = {queue.get(timeout=30) for _ in procs}
    for p in procs:
        p.join()
    assert len(ids) == 1 and json.loads(settings_beside(out).read_text())[RUN_ID] in ids


# --- the trainers: a real run on a tiny model (built from a config, no weights read), then reruns ------------


@pytest.fixture(scope="module")
def tiny_base(embedded_dir, tmp_path_factory):
    """A 2-layer, 16-wide causal LM with the embedded model's tokenizer: trains and samples in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    path = tmp_path_factory.mktemp("tiny") / "base"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def refused(fn, *fields: str) -> str:
    with pytest.raises(ValueError, match="was made with other settings") as caught:
        fn()
    message = str(caught.value)
    assert all(f"{field}: " in message for field in fields) and "--resume-anyway" in message, message
    return message


@pytest.mark.slow
def test_bc_train_rm_and_grpo_refuse_a_rerun_with_other_settings_and_resume_anyway_continues(
    tiny_base, tmp_path, capsys
):
    from test_trainers import judged_episodes

    from rewards.reward_model import RewardModel, RewardModelConfig
    from sotopia_env import read_episodes
    from trainers.bc import BCConfig, train_bc
    from trainers.grpo import GRPOConfig, train_grpo
    from trainers.train_reward_model import RMTrainConfig, train_reward_model

    episodes = tmp_path / "episodes.jsonl"
    judged_episodes(episodes, [(1, 9), (5, 2)])

    bc = dict(episodes=str(episodes), out=str(tmp_path / "bc"), base=tiny_base, batch_size=4, max_length=256)
    train_bc(BCConfig(**bc), progress=False)
    refused(lambda: train_bc(BCConfig(**{**bc, "lr": 1e-3}), progress=False), "lr")
    assert train_bc(BCConfig(**{**bc, "save_every": 7}), progress=False)["steps"] == 4  # not compared: resumes
    assert train_bc(BCConfig(**{**bc, "epochs": 3}, resume_anyway=True), progress=False)["steps"] == 6
    assert "warning: " in capsys.readouterr().err

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"episode_id": f"e{e}", "prompt": f"Scenario {e}.", "utterance": u, "label": float(len(u))})
            + "\n"
            for e in range(4)
            for u in ("Hi.", "Fine, deal.")
        )
    )
    rm = dict(data=str(rows), out=str(tmp_path / "rm"), base=tiny_base, max_length=128, eval_every=1, epochs=1)
    train_reward_model(RMTrainConfig(**rm), progress=False)
    refused(
        lambda: train_reward_model(RMTrainConfig(**{**rm, "lora_r": 4, "seed": 3}), progress=False), "lora_r", "seed"
    )
    assert train_reward_model(RMTrainConfig(**{**rm, "patience": 9}), progress=False)["steps"] == 1

    RewardModel.create(RewardModelConfig(base=tiny_base, max_length=256)).save(tmp_path / "reward")
    grpo = dict(
        reward_model=str(tmp_path / "reward"),
        base=tiny_base,
        rollout="env",
        partner="scripted",
        steps=1,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=4,
        max_prompt_tokens=256,
        max_turns=2,
        heldout_states=1,
        save_every=1,
        tensorboard=False,
    )
    train_grpo(GRPOConfig(**grpo, out=str(tmp_path / "grpo")), progress=False)
    refused(lambda: train_grpo(GRPOConfig(**{**grpo, "steps": 2}, out=str(tmp_path / "grpo")), False), "steps")
    train_grpo(GRPOConfig(**{**grpo, "steps": 2}, out=str(tmp_path / "grpo"), resume_anyway=True), progress=False)
    train_grpo(GRPOConfig(**grpo, out=str(tmp_path / "other")), progress=False)  # the same settings, another run
    # Episode ids name their run: the resumed run kept its id, the other run's ids are its own.
    ids = {}
    for name in ("grpo", "other"):
        run_id = json.loads((tmp_path / name / "config.json").read_text())["run_id"]
        ids[name] = [e.id for e in read_episodes(tmp_path / name / "episodes.jsonl")]
        assert all(i.startswith(f"{run_id}|train|") for i in ids[name]), ids
    assert len(ids["grpo"]) == 4 and len(ids["other"]) == 2 and not set(ids["grpo"]) & set(ids["other"])
