"""One renderer for every reader of a dialogue state: what a token budget keeps and what it leaves out."""

from __future__ import annotations

import pytest

from agents.llm_agent import SYSTEM_PROMPT, build_messages
from agents.models import chat_token_ids
from agents.render import PromptTooLong, render_chat, render_prompts
from sotopia_env import SocialParallelEnv, split

LATEST = "I will only agree if we write it down today."


def long_hard_state(turns: int = 31) -> tuple[str, str, str]:
    """(prompt, goal, oldest line) of agent_1 after `turns` env steps (odd: then it is agent_1's turn), the
    dialogue ending with agent_0 saying LATEST. The hard scenario whose seat-1 header is shortest in SmolLM2 tokens (218 with the system turn,
    profile details left out), so a 256-token budget holds the fixed part and the latest line."""
    scenario = next(s for s in split("hard") if s.id == "com-market-stall")
    env = SocialParallelEnv(scenarios=[scenario], max_turns=turns + 5)
    obs, _ = env.reset(seed=0)
    for t in range(turns):
        agent = f"agent_{t % 2}"  # agent_0 opens
        line = LATEST if t == turns - 1 else f"Let me say this for the {t}th time: my position has not changed at all."
        obs, *_ = env.step({agent: line})
    return obs["agent_1"]["prompt"], scenario.roles[1].goal, "for the 0th time"


def test_a_31_turn_hard_state_at_256_tokens_keeps_the_system_turn_goal_and_latest_line(transformers_engine):
    from rewards.reward_model import RewardModel, RewardModelConfig

    prompt, goal, oldest = long_hard_state()
    tokenizer = transformers_engine.tokenizer
    messages = build_messages({"prompt": prompt})
    assert len(chat_token_ids(tokenizer, messages, add_generation_prompt=True)) > 1000  # far past the budget

    transformers_engine.max_prompt_tokens = 256
    try:
        policy_ids = transformers_engine.encode([messages])[0]
    finally:
        transformers_engine.max_prompt_tokens = 2048
    rm = RewardModel.create(RewardModelConfig(max_length=256), device="cpu")
    utterance = "Then let us write it down now."
    rm_ids = rm.encode([prompt], [utterance])[0]

    for ids, reader in ((policy_ids, "policy"), (rm_ids, "reward model")):
        text = tokenizer.decode(ids)
        assert len(ids) <= 256, reader
        assert SYSTEM_PROMPT in text, reader
        assert f"Your goal: {goal}" in text, reader
        assert LATEST in text, reader
        assert "earlier lines left out)" in text, reader
        assert oldest not in text, reader
        assert "what do you do next?" in text, reader
    assert tokenizer.decode(rm_ids).rstrip().endswith(f"{utterance}<|im_end|>")


def test_a_state_within_the_budget_is_rendered_exactly_as_the_chat_template_does(transformers_engine):
    prompt, _, _ = long_hard_state(turns=3)
    messages = build_messages({"prompt": prompt})
    tokenizer = transformers_engine.tokenizer
    rendered = render_chat(tokenizer, messages, 4096, reply="Fine.")
    plain = chat_token_ids(tokenizer, messages + [{"role": "assistant", "content": "Fine."}])
    assert rendered.ids == plain
    assert rendered.prompt_length == len(chat_token_ids(tokenizer, messages, add_generation_prompt=True))
    assert rendered.lines_left_out == 0


def test_the_oldest_lines_go_first_and_the_marker_counts_them(transformers_engine):
    prompt, _, _ = long_hard_state(turns=13)
    messages = build_messages({"prompt": prompt})
    tokenizer = transformers_engine.tokenizer
    full = len(chat_token_ids(tokenizer, messages, add_generation_prompt=True))
    rendered = render_chat(tokenizer, messages, full - 40)  # room for all but about two lines
    text = tokenizer.decode(rendered.ids)
    assert 1 <= rendered.lines_left_out <= 3
    n = rendered.lines_left_out
    assert f"({n} earlier line{'s' if n > 1 else ''} left out)" in text
    assert "Turn 0:" not in text and f"Turn {n}:" in text and "Turn 12:" in text
    assert "Personality:" in text  # profile details go only after every line but the latest


def test_a_fixed_part_over_the_budget_is_an_error_naming_both_sizes(transformers_engine):
    prompt, _, _ = long_hard_state(turns=5)
    with pytest.raises(ValueError, match=r"fixed part of the prompt .* is \d+ tokens, over the budget of 100"):
        render_chat(transformers_engine.tokenizer, build_messages({"prompt": prompt}), 100)
    with pytest.raises(ValueError, match="over the budget of 5"):
        render_chat(transformers_engine.tokenizer, [{"role": "user", "content": "a plain prompt with no dialogue"}], 5)


def test_a_generation_prompt_is_fitted_to_the_context_less_the_new_tokens_it_asks_for(transformers_engine):
    """One budget rule for every engine: max_prompt_tokens, and never more than the model's context leaves after
    max_new_tokens (vLLM would end the answer at the context's end, silently). A prompt that cannot be shortened
    to that is refused with its batch position, both sizes and what to change."""
    tokenizer = transformers_engine.tokenizer
    prompt, goal, oldest = long_hard_state()  # 1252 tokens
    state = build_messages({"prompt": prompt})
    [ids] = render_prompts(tokenizer, [state], 4096, max_new_tokens=700, context_length=1024)
    text = tokenizer.decode(ids)
    assert len(ids) <= 1024 - 700 and f"Your goal: {goal}" in text and LATEST in text and oldest not in text
    assert render_prompts(tokenizer, [state], 300, max_new_tokens=8, context_length=1024) == render_prompts(
        tokenizer, [state], 300
    )  # within the context: max_prompt_tokens alone decides
    plain = [{"role": "user", "content": "Score this dialogue. " * 100}]  # nothing in it can be left out
    assert 324 < len(chat_token_ids(tokenizer, plain, add_generation_prompt=True)) <= 4096
    with pytest.raises(PromptTooLong) as refused:
        render_prompts(tokenizer, [state, plain], 4096, max_new_tokens=700, context_length=1024)
    assert refused.value.index == 1
    assert str(refused.value).startswith("conversation 1: the prompt is ") and "over the budget of 324" in str(
        refused.value
    )
    assert "context of 1024 tokens less max_new_tokens=700" in refused.value.reason
    assert "ask for fewer new tokens" in refused.value.reason
    with pytest.raises(ValueError, match="max_new_tokens=1024 leaves no room for a prompt in the model's context"):
        render_prompts(tokenizer, [state], 4096, max_new_tokens=1024, context_length=1024)
    assert transformers_engine.context_length == 8192  # SmolLM2's positions: the transformers engine's context
