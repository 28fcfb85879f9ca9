"""The docs' verl/SkyRL example (docs/trainers.md) runs as written: the test executes that code block itself, so
the two cannot drift, against the Gymnasium env it adapts."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from agents.llm_agent import SYSTEM_PROMPT, parse_reply
from agents.multiturn import turn_text
from sotopia_env import ScriptedPolicy, SocialGymEnv

TRAINERS_DOC = Path(__file__).resolve().parents[1] / "docs" / "trainers.md"
MARKER = "<!-- example: text-env adapters (tests/test_text_env_adapters.py runs this block) -->"

PARTNER = ("Hi! Do you have a minute to plan this?", "Sure, what do you suggest?", "Fine by me.")
LEARNER = (
    "Yes, let's split the work by weekday.",
    '{"action_type": "non-verbal communication", "argument": "nods and opens a calendar"}',
    "Then Monday and Wednesday are mine.",
)
OPTIONS = {"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")}


def length_reward(context) -> float:
    """A scripted reward (characters / 10) instead of a reward model: the test checks that each step's reward is
    the env's reward of that utterance, passed through unchanged, which any exact function shows."""
    return len(context.action.argument) / 10


def docs_example() -> dict:
    text = TRAINERS_DOC.read_text(encoding="utf-8")
    assert MARKER in text, "docs/trainers.md lost the marker above the text-env adapter example"
    block = re.search(r"```python\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    namespace: dict = {"__name__": "docs_example"}
    exec(compile(block.group(1), "docs/trainers.md (text-env adapters)", "exec"), namespace)
    return namespace


def env_kwargs() -> dict:
    return {"partner": ScriptedPolicy(PARTNER), "reward_fn": length_reward, "max_turns": 6, "learner_seat": 1}


def test_the_skyrl_style_text_env_is_the_gymnasium_env_step_for_step():
    example = docs_example()
    text_env = example["SocialTextEnv"](seed=5, options=OPTIONS, **env_kwargs())
    gym_env = SocialGymEnv(**env_kwargs())
    obs, _ = gym_env.reset(seed=5, options=OPTIONS)

    chat, metadata = text_env.init([])
    assert chat == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": obs["prompt"]}]
    assert metadata["character"] == "amara_okafor"  # the learner sits in seat 1
    for k, line in enumerate(LEARNER):
        out = text_env.step(line)
        before = obs
        obs, reward, terminated, truncated, _ = gym_env.step(parse_reply(line, obs["name"]))
        assert out["reward"] == reward == len(parse_reply(line).argument) / 10
        assert out["done"] == (terminated or truncated) == (k == len(LEARNER) - 1)  # max_turns 6: 3 learner turns
        if not out["done"]:
            [message] = out["observations"]
            assert message == {"role": "user", "content": turn_text(before, obs)}
            assert PARTNER[k + 1] in message["content"] and parse_reply(line).argument not in message["content"]
        else:
            assert out["observations"] == []
    assert text_env.rewards == [len(parse_reply(x).argument) / 10 for x in LEARNER]
    # A framework reuses instances across episodes: the next episode starts with nothing of the last one.
    text_env.init([])
    assert text_env.rewards == []
    text_env.step(LEARNER[0])
    assert text_env.rewards == [len(parse_reply(LEARNER[0]).argument) / 10]


def test_the_verl_style_interaction_plays_the_same_episode_through_its_async_calls():
    example = docs_example()
    reference = example["SocialTextEnv"](seed=5, options=OPTIONS, **env_kwargs())
    chat, _ = reference.init([])
    interaction = example["SocialInteraction"]({"options": OPTIONS, **env_kwargs()})

    async def play() -> tuple[list, float]:
        instance = await interaction.start_interaction(seed=5)
        messages, turns = list(chat), []
        for line in LEARNER:
            messages.append({"role": "assistant", "content": line})
            done, text, score, extra = await interaction.generate_response(instance, messages)
            turns.append((done, text, score))
            messages.append({"role": "user", "content": text})
        total = await interaction.calculate_score(instance)
        await interaction.finalize_interaction(instance)
        assert instance not in interaction.games
        return turns, total

    turns, total = asyncio.run(play())
    expected = []
    for line in LEARNER:
        out = reference.step(line)
        expected.append((out["done"], out["observations"][0]["content"] if out["observations"] else "", out["reward"]))
    assert turns == expected
    assert total == sum(reference.rewards)
