"""The learned reward model: learning is shown on a known label, plus scoring, wrappers and resume.

Learning is shown on hand-written rows (an utterance that asks the partner a question scores 10, else 0). What
GRPO must raise, in tests/test_learning_*.py (tests/learning.py), is the reward of a known preference learned from the
embedded policy's own samples (benchmarks.preference: an utterance that addresses the partner scores 10, else
0; that model is committed, since learning it takes 300+ steps, minutes on a GPU and over an hour here)."""

from __future__ import annotations

import json
import random

import pytest

from agents.llm_agent import build_messages
from benchmarks.preference import (
    PREFERENCE_RM,
    PREFERENCE_ROWS,
    preference_label,
    preference_states,
)
from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env import SocialParallelEnv, split
from trainers.train_reward_model import RMTrainConfig, load_rows, pearson, split_rows, train_reward_model

QUESTIONS = [
    "Could you lower the price a bit?",
    "What do you need from me?",
    "Would Friday work for you?",
    "How about we split it?",
    "Why is that important to you?",
    "Can you tell me more?",
    "Is that your final offer?",
    "Do you have time tomorrow?",
]
STATEMENTS = [
    "I think that is fair.",
    "That works for me.",
    "I cannot do that.",
    "Let me think about it.",
    "I will bring it tomorrow.",
    "This is my best offer.",
    "I understand your point.",
    "We should meet halfway.",
]


def synthetic_rows(n_episodes: int, seed: int = 0, prompts: list[str] | None = None) -> list[dict]:
    """Label = 10 when the utterance asks the partner a question, else 0: a known function of the text.
    Prompts: the given dialogue states in turn, or a short placeholder."""
    rng = random.Random(seed)
    rows = []
    for ep in range(n_episodes):
        for k in range(4):
            asks = rng.random() < 0.5
            text = rng.choice(QUESTIONS if asks else STATEMENTS)
            if rng.random() < 0.5:
                text = rng.choice(["Well, ", "Okay. ", "Hmm, ", "Listen, "]) + text[0].lower() + text[1:]
            prompt = prompts[(4 * ep + k) % len(prompts)] if prompts else f"Scenario: a talk.\nTurn {k}: they spoke."
            rows.append({"episode_id": f"e{ep}", "prompt": prompt, "utterance": text, "label": 10.0 if asks else 0.0})
    return rows


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


LINES = [
    "I was hoping we could talk.",
    "You are late again.",
    "I have an offer for you.",
    "This is not what we agreed.",
]


def short_states() -> list[str]:
    """One short state per library scenario: its situation, the first role's goal and a partner's line (118-146
    SmolLM2 tokens with the system turn). Full observation states keep a 200-250-token header (agents.render),
    which made the reward model's fixture alone take 8-19 minutes here; these keep the test in the suite's
    time budget. They are not observation prompts, so every reader sees them whole."""
    return [
        f'Scenario: {s.situation}\nYour goal: {s.roles[0].goal}\nThey said: "{LINES[i % len(LINES)]}"'
        for i, s in enumerate(split("all"))
    ]


@pytest.fixture(scope="module")
def question_rm(embedded_dir, tmp_path_factory):
    """A reward model trained on the synthetic question preference, with short dialogue states as prompts."""
    tmp = tmp_path_factory.mktemp("question_rm")
    write_rows(tmp / "synthetic.jsonl", synthetic_rows(40, prompts=short_states()))  # 160 rows: held-out Pearson 0.875
    cfg = RMTrainConfig(
        data=str(tmp / "synthetic.jsonl"),
        out=str(tmp / "rm"),
        epochs=4,
        batch_size=8,
        lr=1e-3,
        max_length=192,
        lora_layers=6,
        eval_every=24,
        seed=0,
    )
    return train_reward_model(cfg, progress=False), tmp / "rm"


def test_reward_model_learns_a_known_function_of_the_text(question_rm):
    summary, out = question_rm
    assert summary["heldout_pearson"] >= 0.8, summary
    # The saved best model ranks fresh utterances it never saw the way the rule does.
    rm = RewardModel.load(out / "best")
    fresh = ["Would you take $400 for it?", "Where should we meet?", "I am happy with that.", "That is too expensive."]
    scores = rm.score(["Scenario: a talk.\nTurn 1: they spoke."] * 4, fresh)
    assert min(scores[:2]) > max(scores[2:])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("heldout_mse" in m for m in metrics) and (out / "checkpoint" / "state.json").exists()


@pytest.mark.slow
def test_the_committed_preference_model_scores_held_out_policy_samples_as_the_rule_does():
    """The preference's reward model (benchmarks/data/address_rm, made by `python -m benchmarks.preference` on an
    H200) loads here and scores the embedded policy's held-out samples (rows it was not trained on: the same
    split by state as training) the way the rule does; a fresh pair of lines too."""
    rows = [json.loads(line) for line in PREFERENCE_ROWS.read_text().splitlines()]
    _, heldout = split_rows(rows, 0.2, seed=0)
    heldout = heldout[:48]
    rm = RewardModel.load(PREFERENCE_RM)
    scores = rm.score([r["prompt"] for r in heldout], [r["utterance"] for r in heldout])
    assert pearson(scores, [r["label"] for r in heldout]) >= 0.9
    state = preference_states(1, seed=7)[0]
    fresh = ["Would you take $180 for it?", "Can your brother help us?", "The bike is old.", "That seems fair enough."]
    assert [preference_label(x) for x in fresh] == [10.0, 10.0, 0.0, 0.0]
    scores = rm.score([state] * 4, fresh)
    assert min(scores[:2]) > max(scores[2:]), scores


def test_training_resumes_from_its_checkpoint(embedded_dir, tmp_path):
    data = tmp_path / "d.jsonl"
    write_rows(data, synthetic_rows(10))
    out = tmp_path / "rm"
    base = dict(data=str(data), out=str(out), batch_size=8, max_length=128, lora_layers=2, eval_every=2, seed=1)
    first = train_reward_model(RMTrainConfig(epochs=1, **base), progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == first["steps"] == 4
    second = train_reward_model(RMTrainConfig(epochs=2, resume_anyway=True, **base), progress=False)  # extended
    assert second["steps"] == 8  # continued from step 4, not from 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_split_is_by_episode_and_bad_data_is_reported(tmp_path):
    rows = synthetic_rows(10)
    train, held = split_rows(rows, 0.2, seed=0)
    assert {r["episode_id"] for r in train}.isdisjoint({r["episode_id"] for r in held}) and len(held) == 8
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"prompt": "p", "utterance": "u"}) + "\n")
    with pytest.raises(ValueError, match="no rows with a 'label'"):
        load_rows(empty)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def small_rm(embedded_dir):
    return RewardModel.create(RewardModelConfig(max_length=256))


def test_batched_scores_equal_one_at_a_time_and_are_cached(small_rm):
    prompts = ["Scenario: a.\nTurn 0: hi.", "Scenario: b, much longer context here.\nTurn 0: hello there."] * 3
    utterances = ["Yes.", "Could we talk about the price of the bike?", "No.", "Sure, why not?", "Fine", "Okay then."]
    batched = small_rm.score(prompts, utterances, batch_size=4)
    small_rm.clear_cache()
    single = [small_rm.score([p], [u])[0] for p, u in zip(prompts, utterances)]
    assert batched == pytest.approx(single, abs=1e-4)
    assert small_rm.score(prompts[:1], utterances[:1]) == [single[0]]  # served from the cache


def test_a_long_text_that_is_not_an_observation_prompt_is_refused_not_cut_blindly(small_rm):
    """Only an observation prompt has dialogue lines the renderer knows it may leave out (tests/test_render.py
    shows those being fitted); other text over the budget is an error naming the sizes, not a silent cut."""
    long_prompt = "Scenario: x.\n" + "\n".join(f"Turn {i}: blah blah blah." for i in range(300))
    with pytest.raises(ValueError, match=r"is \d+ tokens, over the budget of 256"):
        small_rm.encode([long_prompt], ["My final answer."])


def test_wrappers_env_reward_and_trl_style(small_rm):
    env = SocialParallelEnv(reward_fn=small_rm.as_env_reward())
    obs, _ = env.reset(seed=0, options={"scenario": "neg-used-bike"})
    _, rewards, *_ = env.step({"agent_0": "Would you take $400?"})
    assert rewards["agent_0"] == pytest.approx(small_rm.score([obs["agent_0"]["prompt"]], ["Would you take $400?"])[0])
    trl_reward = small_rm.as_trl_reward()
    # TRL passes conversational data as the chat the policy saw: the same state, so the same reward.
    conversational = trl_reward(
        prompts=[build_messages(obs["agent_0"])],
        completions=[[{"role": "assistant", "content": "Would you take $400?"}]],
    )
    plain = trl_reward(prompts=[obs["agent_0"]["prompt"]], completions=["Would you take $400?"])
    assert plain == pytest.approx([rewards["agent_0"]])
    assert conversational == pytest.approx(plain, abs=1e-5)
