"""TRL's GRPOTrainer training in the env through `trainers.trl_env.EnvRollout` (TRL's `rollout_func` hook): real
TRL steps on the embedded model, a real (untrained) reward model as the env's per-utterance reward."""

from __future__ import annotations

import json

import pytest
import torch
import trl
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer

from agents.llm_agent import parse_reply
from agents.multiturn import turn_text
from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env import ScriptedPolicy, SocialGymEnv
from trainers.trl_env import EnvRollout, episode_starts, learner_return, mean_utterance_reward, parse_start

# The partner is scripted so that the test knows every partner line and can find it in the masked tokens; the
# learner is the embedded model, trained by TRL.
PARTNER_LINES = ("Hello! I was hoping we could talk this over.", "Hmm, tell me more about that.", "Alright.")


def _runs(mask: list[int]) -> list[tuple[int, int, int]]:
    """(value, start, end) of each run of equal mask values."""
    runs, start = [], 0
    for k in range(1, len(mask) + 1):
        if k == len(mask) or mask[k] != mask[start]:
            runs.append((mask[start], start, k))
            start = k
    return runs


def test_turn_text_holds_what_happened_since_the_learners_last_turn_and_never_its_own_lines():
    env = SocialGymEnv(partner=ScriptedPolicy(["Hi there.", "Ok."]), max_turns=6, learner_seat=1)
    first, _ = env.reset(seed=3)
    second, *_ = env.step("Hello, good to see you.")
    text = turn_text(first, second)
    assert text.startswith("Turn 2: ") and text.endswith("what do you do next?")
    assert '"Ok."' in text and "Hello, good to see you." not in text and "Hi there." not in text
    with pytest.raises(ValueError, match="the earlier one first"):
        turn_text(second, first)


def test_episode_starts_name_one_learner_seat_each_and_alternate():
    starts = [parse_start(p) for p in episode_starts("hard", count=4, seed=1)["prompt"]]
    assert [s.learners for s in starts] == [("agent_0",), ("agent_1",), ("agent_0",), ("agent_1",)]
    with pytest.raises(ValueError, match="episode_starts"):
        parse_start("What is 2+2?")
    with pytest.raises(ValueError, match="rollout_func=EnvRollout"):
        learner_return(prompts=["x"], completions=["y"])


@pytest.mark.slow
def test_trl_grpo_trains_on_whole_dialogues_with_partner_turns_masked_and_the_envs_utterance_rewards(
    embedded_dir, tmp_path
):
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)
    layers = model.config.num_hidden_layers
    lora = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], layers_to_transform=[layers - 2, layers - 1]
    )
    rm = RewardModel.create(RewardModelConfig(max_length=384))  # untrained: the test is about the mechanics
    rollout = EnvRollout(
        partner=ScriptedPolicy(PARTNER_LINES),
        reward_fn=rm.as_env_reward(),
        max_turns=4,
        max_new_tokens=16,
        max_prompt_tokens=384,
        episodes_path=tmp_path / "episodes.jsonl",
    )
    calls = []

    def watched(prompts, trainer):
        out = rollout(prompts, trainer)
        # Each reply was sampled from exactly the ids TRL scores: recompute the log-probs on prompt + completion.
        policy = trainer.accelerator.unwrap_model(trainer.model)
        policy.eval()
        recomputed = []
        with torch.no_grad():
            for prompt, completion in zip(out["prompt_ids"], out["completion_ids"]):
                logits = policy(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
                logps = (logits / trainer.args.temperature).log_softmax(-1)
                recomputed.append(logps.gather(-1, torch.tensor(completion)[:, None])[:, 0].tolist())
        policy.train()
        calls.append((list(prompts), out, list(rollout.episodes), recomputed))
        return out

    config = trl.GRPOConfig(
        output_dir=str(tmp_path / "trl"),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=128,
        max_steps=2,
        learning_rate=1e-3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # TRL defaults to bf16 autocast, ~3x slower on this CPU and off by ~0.05 in log-probs
        gradient_checkpointing=False,
        seed=0,
        shuffle_dataset=False,
        temperature=1.0,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[learner_return, mean_utterance_reward],
        args=config,
        train_dataset=episode_starts("hard", count=2, seed=0),
        processing_class=tokenizer,
        peft_config=lora,
        rollout_func=watched,
    )
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    trainer.train()

    assert len(calls) == 2
    multi_turn = 0
    for step, (prompts, out, episodes, recomputed) in enumerate(calls):
        starts = [parse_start(p) for p in prompts]
        assert starts[0] == starts[1]  # TRL's group: the G=2 dialogues of one start
        assert starts[0].learners == (("agent_0",), ("agent_1",))[step]
        for i, episode in enumerate(episodes):
            learner = starts[i].learners[0]
            assert episode.scenario.id == starts[i].scenario and episode.seed == starts[i].seed
            completion, mask = out["completion_ids"][i], out["env_mask"][i]
            assert len(completion) == len(mask) == len(out["logprobs"][i]) <= config.max_completion_length
            mine = [t for t in episode.turns if t.agent == learner]
            theirs = [t for t in episode.turns if t.agent != learner]
            # The rewards TRL gets are the env's own per-utterance rewards of the learner's turns.
            assert out["utterance_rewards"][i] == pytest.approx([t.reward for t in mine])
            runs = _runs(mask)
            replies = [tokenizer.decode(completion[a:b]) for v, a, b in runs if v == 1]
            inserted = [tokenizer.decode(completion[a:b]) for v, a, b in runs if v == 0]
            # Each trained run is exactly what one learner turn played, plus the end token the learner sampled, and
            # nothing the env inserted; a turn whose played text no sampled tokens spell exactly has none.
            assert 1 <= len(replies) <= len(mine)
            assert not any("<|im_start|>" in text for text in replies)
            played = iter(turn.argument for turn in mine)
            for text in replies:
                body = text.removesuffix("<|im_end|>").removesuffix("\n").strip()
                # (a JSON action is trained as its object: its argument is what the env recorded)
                assert any(parse_reply(body).argument == argument for argument in played), (text, mine)
            # Partner turns between the learner's replies sit in the masked (env) tokens, as user turns.
            between = [t.argument for t in theirs if mine[0].index < t.index < mine[-1].index]
            for line in between:
                assert any(line in text and "<|im_start|>user" in text for text in inserted)
            multi_turn += bool(between)
            # The sampling log-probs are the policy's on exactly these ids (the masked ones are TRL's business).
            ours = torch.tensor(out["logprobs"][i])[torch.tensor(mask) == 1]
            theirs_lp = torch.tensor(recomputed[i])[torch.tensor(mask) == 1]
            assert torch.allclose(ours, theirs_lp, atol=2e-3), (ours - theirs_lp).abs().max()
        # TRL trained on the sums of those rewards (and logged the mean as its per-function reward).
        logged = [h for h in trainer.state.log_history if "reward" in h][step]
        sums = [sum(r) for r in out["utterance_rewards"]]
        means = [sum(r) / len(r) for r in out["utterance_rewards"]]
        assert logged["rewards/learner_return/mean"] == pytest.approx(sum(sums) / len(sums), abs=1e-4)
        assert logged["rewards/mean_utterance_reward/mean"] == pytest.approx(sum(means) / len(means), abs=1e-4)
    assert multi_turn >= 1  # at least one dialogue had partner turns between learner replies
    assert any(r != 0 for _, out, _, _ in calls for rs in out["utterance_rewards"] for r in rs)
    lora_after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[n], lora_after[n].detach()) for n in lora_before)  # the adapter moved
    recorded = [json.loads(line) for line in (tmp_path / "episodes.jsonl").read_text().splitlines()]
    assert len(recorded) == 4 and all("utterance_rewards" in r["meta"]["trl"] for r in recorded)
    # Each id names the run (recorded beside the episodes file, kept by a resumed run), then seed|step|rank|index.
    run_id = json.loads((tmp_path / "episodes.settings.json").read_text())["run_id"]
    assert len({r["id"] for r in recorded}) == 4 and all(r["id"].startswith(f"{run_id}|trl|0|") for r in recorded)
