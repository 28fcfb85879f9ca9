"""GRPO in the environment (trainers.online) on the embedded model: the rewards training uses are the env's,
every training dialogue is recorded, both credit modes produce the advantages their equations say, and a
resumed run plays and trains exactly what an uninterrupted one does."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer

from agents.llm_agent import parse_reply
from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env import read_episodes
from trainers.grpo import GRPOConfig, train_grpo
from trainers.grpo_math import group_advantages, position_advantages, returns_to_go
from trainers.learner import Learner


@pytest.fixture(scope="module")
def fresh_rm(tmp_path_factory):
    """An untrained reward model: its scores depend on the text, which is all these mechanics tests need."""
    path = tmp_path_factory.mktemp("online_rm") / "rm"
    RewardModel.create(RewardModelConfig(max_length=384)).save(path)
    return path


def online_config(rm, out, **kw) -> GRPOConfig:
    base = dict(
        reward_model=str(rm),
        out=str(out),
        rollout="env",
        partner="scripted",
        steps=2,
        prompts_per_step=2,
        group_size=2,
        max_new_tokens=8,
        max_prompt_tokens=384,
        max_turns=4,
        lora_layers=2,
        heldout_states=1,
        lr=1e-3,
        save_every=1,
        tensorboard=False,
    )
    return GRPOConfig(**{**base, **kw})


def spy_updates(monkeypatch) -> list[list]:
    """Record the groups each update trains on (the real update still runs)."""
    seen: list[list] = []
    update = Learner.update

    def spy(self, step, groups):
        seen.append(
            [
                (list(g.prompt_ids), [list(c) for c in g.completions], list(g.advantages), [list(m) for m in g.masks])
                for g in groups
            ]
        )
        return update(self, step, groups)

    monkeypatch.setattr(Learner, "update", spy)
    return seen


@pytest.fixture(scope="module")
def turn_run(embedded_dir, fresh_rm, tmp_path_factory):
    """Two uninterrupted steps with turn credit: learner seats alternate, a scripted partner, 32 new tokens (room
    for a reply to run past its line, were it not stopped there)."""
    out = tmp_path_factory.mktemp("online") / "straight"
    with pytest.MonkeyPatch.context() as mp:
        updates = spy_updates(mp)
        summary = train_grpo(online_config(fresh_rm, out, credit="turn", max_new_tokens=32), progress=False)
    return out, summary, updates


def test_turn_credit_trains_on_candidates_the_env_scored_and_records_every_dialogue(turn_run, embedded_dir):
    out, summary, updates = turn_run
    episodes = read_episodes(out / "episodes.jsonl")
    assert [e.meta["training"]["step"] for e in episodes] == [0, 0, 1, 1]
    # Learner seats alternate across the starts; the adapter that spoke is the one of its step.
    assert [e.meta["training"]["learner_agents"] for e in episodes] == [["agent_0"], ["agent_1"]] * 2
    assert [e.meta["training"]["adapter"] for e in episodes] == ["step-0", "step-0", "step-1", "step-1"]
    groups = iter([g for step in updates for g in step])
    tokenizer = AutoTokenizer.from_pretrained(embedded_dir)
    n_turns = 0
    for ep in episodes:
        learner = ep.meta["training"]["learner_agents"][0]
        assert ep.agent_models[learner] == f"grpo:embedded@{ep.meta['training']['adapter']}"
        for turn in (t for t in ep.turns if t.agent == learner):
            candidates = ep.meta["training"]["candidates"][str(turn.index)]
            assert len(candidates) == 2 and sum(c["played"] for c in candidates) == 1
            played = next(c for c in candidates if c["played"])
            # The env's reward of the played utterance and the trainer's reward of that candidate: one number.
            assert (played["text"], played["reward"]) == (turn.argument, turn.reward)
            advantages = group_advantages(torch.tensor([[c["reward"] for c in candidates]]))[0].tolist()
            trained = [(c, a) for c, a in zip(candidates, advantages) if c["trained"]]
            n_turns += 1
            if not trained:
                continue
            _, completions, group_advs, masks = next(groups)
            # Two candidates whose rewards differ by ~1e-3 divide rounding noise by their spread (std + 1e-4): the
            # trainer's advantages and these agree to ~1e-5, a wrong candidate or sign would be off by ~1.
            assert group_advs == pytest.approx([a for _, a in trained], abs=1e-4)
            # What is trained of each candidate is what it played, and the end the sampler produced.
            for (candidate, _), ids, mask in zip(trained, completions, masks):
                text = tokenizer.decode([t for t, m in zip(ids, mask) if m], skip_special_tokens=False)
                body = text.removesuffix("<|im_end|>").removesuffix("\n")
                if candidate["action_type"] == "speak":
                    assert body.strip() == candidate["text"]
                else:
                    assert parse_reply(body).argument == candidate["text"]
    assert next(groups, None) is None and n_turns > 0
    assert summary["credit"] == "turn" and {"heldout_reward_before", "heldout_reward_after"} <= set(summary)
    # Ids name the run (and an evaluation its tag): unique across runs, and before/after apart.
    run_id = json.loads((out / "config.json").read_text())["run_id"]
    assert [e.id for e in episodes] == [f"{run_id}|train|{s}|{i}" for s in (0, 1) for i in (0, 1)]
    assert [e.id for e in read_episodes(out / "eval_before.jsonl")] == [f"{run_id}|eval|0|before"]
    assert [e.id for e in read_episodes(out / "eval_after.jsonl")] == [f"{run_id}|eval|0|after"]


def test_episode_credit_gives_each_learner_turn_its_normalised_return_to_go(
    embedded_dir, fresh_rm, tmp_path, monkeypatch
):
    updates = spy_updates(monkeypatch)
    train_grpo(online_config(fresh_rm, tmp_path / "ep", credit="episode", steps=1, gamma=0.5), progress=False)
    episodes = read_episodes(tmp_path / "ep" / "episodes.jsonl")
    assert len(episodes) == 4  # B = 2 starts x G = 2 episodes
    groups = iter(updates[0])
    for start in (episodes[:2], episodes[2:]):
        # The G episodes of a start share scenario, characters and learner seat.
        assert len({(e.scenario.id, e.characters[0].id, e.characters[1].id) for e in start}) == 1
        learner = start[0].meta["training"]["learner_agents"][0]
        rewards = [[t.reward for t in e.turns if t.agent == learner] for e in start]
        returns = [returns_to_go(r, 0.5) for r in rewards]
        advantages = position_advantages(returns)
        for e, rets in zip(start, returns):
            recorded = e.meta["training"]["returns"]
            turns = [t for t in e.turns if t.agent == learner]
            assert [recorded[str(t.index)]["return"] for t in turns] == pytest.approx(rets)
        # Turn position k trains each member's k-th turn with its advantage, one group per distinct prompt: the
        # first turn's prompt (scenario, seat, the scripted partner's line) is the same for every member.
        trained = [
            [e.meta["training"]["returns"][str(t.index)]["trained"] for t in e.turns if t.agent == learner]
            for e in start
        ]
        for k in range(max(map(len, advantages))):
            expected = [advs[k] for advs, ok in zip(advantages, trained) if len(advs) > k and ok[k]]
            position = []
            while sum(len(completions) for _, completions, _, _ in position) < len(expected):
                position.append(next(groups))
            prompts = [tuple(prompt) for prompt, _, _, _ in position]
            assert len(set(prompts)) == len(prompts)  # merged where alike
            given = [adv for _, _, advs, _ in position for adv in advs]
            assert sorted(given) == pytest.approx(sorted(expected))
            if k == 0:
                assert len(position) == 1 and given == pytest.approx(expected)
    assert next(groups, None) is None


def test_a_run_killed_after_a_step_resumes_to_the_same_dialogues_and_adapter(turn_run, fresh_rm, tmp_path):
    straight_out, straight, _ = turn_run
    train_grpo(online_config(fresh_rm, tmp_path / "resumed", credit="turn", steps=1, max_new_tokens=32), progress=False)
    # A step that ran but was not checkpointed leaves its episodes behind; the resume must not keep them twice.
    path = tmp_path / "resumed" / "episodes.jsonl"
    path.write_text(path.read_text() + path.read_text().replace('"step": 0', '"step": 1'))
    # The first run stopped after step 1 as a 1-step run; it is continued as the 2-step run on purpose.
    resumed = train_grpo(
        online_config(fresh_rm, tmp_path / "resumed", credit="turn", max_new_tokens=32, resume_anyway=True), False
    )

    def dialogues(folder):
        return [
            [(t.agent, t.argument, round(t.reward, 5)) for t in e.turns]
            for e in read_episodes(folder / "episodes.jsonl")
        ]

    assert dialogues(tmp_path / "resumed") == dialogues(straight_out) and len(dialogues(straight_out)) == 4
    # The same dialogues under other ids: two runs; the resumed run kept the ids its first part made.
    run_id = json.loads((tmp_path / "resumed" / "config.json").read_text())["run_id"]
    assert [e.id for e in read_episodes(path)] == [f"{run_id}|train|{s}|{i}" for s in (0, 1) for i in (0, 1)]
    assert resumed["heldout_reward_after"] == pytest.approx(straight["heldout_reward_after"], abs=1e-5)
    rows = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
