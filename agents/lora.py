"""LoRA set-up: the one place a model gets its adapter, for the policy (GRPO, BC) and the reward model.

A model gets either a fresh LoRA, built from (rank, alpha, dropout, target modules, the top N layers), or
a saved adapter loaded from disk. A fresh LoRA starts with B = 0, so the wrapped model computes what the
base model does until training moves it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .models import default_device, default_dtype, resolve_model

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def with_lora(
    model: Any,
    *,
    adapter: str | Path | None = None,
    rank: int = 16,
    alpha: int = 32,
    dropout: float = 0.0,
    target_modules: Sequence[str] = ATTENTION_PROJECTIONS,
    top_layers: int | None = None,
    task_type: str = "CAUSAL_LM",
    trainable: bool = True,
) -> Any:
    """`model` as a peft model: with the saved adapter at `adapter` (trainable or frozen), or else with a
    fresh LoRA of `rank` and `alpha` on `target_modules` of the top `top_layers` transformer layers (None:
    all of them). task_type: "CAUSAL_LM" for a policy, "SEQ_CLS" for a reward model (peft then trains the
    score head in full)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    if adapter is not None:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    n = model.config.num_hidden_layers
    if top_layers is not None and not 1 <= top_layers <= n:
        raise ValueError(f"top_layers={top_layers}: the model has {n} layers; give 1..{n}, or None for all")
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        task_type=task_type,
        target_modules=list(target_modules),
        layers_to_transform=list(range(n - top_layers, n)) if top_layers else None,
    )
    return get_peft_model(model, config)


def lora_policy(
    base: str,
    *,
    adapter: str | Path | None = None,
    rank: int = 16,
    alpha: int = 32,
    top_layers: int | None = None,
) -> tuple[Any, Any]:
    """(trainable peft causal LM, tokenizer): the base model (`agents.models.resolve_model`) on the default
    device and dtype, with the adapter at `adapter` or a fresh LoRA (see `with_lora`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = default_device()
    path = resolve_model(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, default_dtype(device))).to(device)
    return with_lora(model, adapter=adapter, rank=rank, alpha=alpha, top_layers=top_layers), tokenizer
