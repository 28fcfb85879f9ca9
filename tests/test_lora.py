from __future__ import annotations

import json

import pytest
import torch

from agents.lora import lora_policy, with_lora


def _base(embedded_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=torch.float32)


def test_a_fresh_lora_on_the_top_layers_adapts_only_their_attention_and_starts_as_the_base(embedded_dir):
    ids = torch.tensor([[1, 504, 3458, 314, 253, 2]])
    base = _base(embedded_dir)
    with torch.no_grad():
        before = base(input_ids=ids).logits
    model = with_lora(base, rank=4, alpha=8, top_layers=2)
    trainable = {n: p.shape for n, p in model.named_parameters() if p.requires_grad}
    # SmolLM2-135M: 30 layers, hidden size 576, so layers 28 and 29 x q/k/v/o x (A, B) = 16 tensors, and
    # A is [rank, 576] on the q projection (576 -> 576).
    assert len(trainable) == 16
    assert {n.split(".layers.")[1].split(".")[0] for n in trainable} == {"28", "29"}
    q_a = next(shape for n, shape in trainable.items() if "layers.29.self_attn.q_proj.lora_A" in n)
    assert tuple(q_a) == (4, 576)
    assert model.peft_config["default"].lora_alpha == 8 and model.peft_config["default"].lora_dropout == 0.0
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before)  # B = 0: the base model's outputs


def test_a_saved_adapter_loads_trainable_or_frozen_with_its_own_weights(embedded_dir, random_loras):
    adapter = random_loras[0]
    saved = json.loads((adapter / "adapter_config.json").read_text())
    trainable = with_lora(_base(embedded_dir), adapter=adapter)
    frozen = with_lora(_base(embedded_dir), adapter=adapter, trainable=False)
    assert trainable.peft_config["default"].r == saved["r"] == 8  # the saved rank, not with_lora's default 16
    names = {n for n, p in trainable.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    assert not any(p.requires_grad for p in frozen.parameters())
    ids = torch.tensor([[1, 504, 3458, 314, 253, 2]])
    with torch.no_grad():
        torch.testing.assert_close(trainable(input_ids=ids).logits, frozen(input_ids=ids).logits)
        base = _base(embedded_dir)(input_ids=ids).logits
    assert (trainable(input_ids=ids).logits - base).abs().max() > 0.1  # the random adapter changes the model


def test_more_top_layers_than_the_model_has_is_an_error_saying_how_many(embedded_dir):
    with pytest.raises(ValueError, match="the model has 30 layers; give 1..30"):
        with_lora(_base(embedded_dir), top_layers=31)


def test_lora_policy_loads_the_base_with_a_fresh_trainable_lora_and_its_tokenizer(embedded_dir):
    model, tokenizer = lora_policy("embedded", rank=2, alpha=4, top_layers=1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 8 and all(".layers.29." in n for n in trainable)  # 4 projections x (A, B)
    assert tokenizer.eos_token_id is not None
