"""In-process vLLM and training on one GPU: how much memory vLLM may take, and sleep mode around the update.

vLLM takes `gpu_memory_utilization` x the GPU's total memory for its weights, activations and KV cache, and
refuses to start when that much is not free. Its own default (0.9) leaves nothing for training. The trainer
starts vLLM after the policy, the KL reference and the reward model are loaded, measures what is free then,
and gives vLLM what training will not need later:

    vLLM's bytes = free - optimizer - activations - margin        (vLLM awake through the update)
    vLLM's bytes = free - optimizer - margin                      (vLLM asleep during the update)

- optimizer: the LoRA gradients and AdamW's two moments (parameter dtype each) and the float32 buffer the
  data-parallel all-reduce builds: trainable x (3 x parameter bytes + 8). Allocated at the first update, kept.
- activations: one micro-batch's forward and backward in the update, at most micro_batch x (max_prompt_tokens
  + max_new_tokens) tokens. Per token and layer 28 x hidden + 7 x intermediate bytes at 16 bits (twice that
  at 32), the logits and their gradient (tokens x vocab x 2 x dtype bytes), and the float32 log-softmax of the
  completion tokens with its input and gradient (micro_batch x max_new_tokens x vocab x 12 bytes). The
  constants are measured, not derived: on an H200 (bf16, LoRA r=16 on q,k,v,o, Llama-shaped models of 16
  layers, 8 sequences of 728 tokens, every sequence whole) the update's peak allocation was 9.37 GiB at hidden
  2,048 / intermediate 5,632, 12.34 GiB at 2,048 / 11,264 and 5.43 GiB at 1,024 / 2,816; a fit gives 27.4 x
  hidden + 6.1 x intermediate and 1.48 GiB for the logits' part, and the rounded-up constants estimate 10.09,
  13.51 and 5.86 GiB. An upper bound: the shared-prompt pass (the default, G > 1) runs a prompt once per group
  and peaked at 4.29 GiB where every sequence whole took 9.37.
- margin: 5% of the GPU, for CUDA contexts, the allocator's fragmentation and the reward model's scoring
  activations (inference on a batch of 16, small beside the update).

With sleep mode (level 1: vLLM's weights go to CPU memory, its KV cache is dropped) the update's activations
use the memory vLLM gives back, so vLLM may keep that much more while it samples. The share is capped at 0.9.
vLLM needs at least its weights (the policy's base, in the same dtype), the KV cache of one group (G x (prompt +
new tokens) x 2 x layers x KV heads x head size x dtype bytes) and 1 GiB for its own activations; below that
the trainer stops and says what to change. Above it, a smaller KV cache only means fewer sequences decode at
once. `--vllm-memory F` sets the share by hand.

Worked example (docs/scale-out.md's projection, one rank): an 80 GB H100 (79.2 GiB), a 7B policy (Qwen2.5-7B) and a
7B reward model in bf16 plus a CUDA context (28.9 GiB resident, 50.3 GiB free), LoRA r=16 on q,k,v,o in float32
(10.1 M parameters: 0.19 GiB of optimizer state), micro-batch 8 x (600 + 128) tokens, hidden 3,584,
intermediate 18,944, 28 layers, vocabulary 152,064: activations (28 x 3,584 + 7 x 18,944) x 28 x 5,824 B =
35.4 GiB, logits 5,824 x 152,064 x 4 B = 3.3 GiB, log-softmax 8 x 128 x 152,064 x 12 B = 1.7 GiB, so 40.4 GiB;
margin 4.0 GiB. Awake through the update vLLM would get 50.3 - 0.19 - 40.4 - 4.0 = 5.7 GiB, under its 15.8 GiB
floor (14.2 GiB of weights), so the trainer stops. Asleep during updates: 46.1 GiB, a share of 0.58 (31 GiB of
KV cache at 57,344 B a token: about 800 sequences of 728 tokens at once). Awake with --micro-batch 2: 36.0 GiB,
0.46 (about 540 sequences at once).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from trainers.grpo_config import GRPOConfig

GiB = 1 << 30
MARGIN = 0.05  # of the GPU's memory
MAX_SHARE = 0.9
VLLM_OVERHEAD = GiB  # vLLM's own activations and CUDA graphs, beside its weights and KV cache
# Bytes a token keeps per layer for the backward pass, per hidden and per MLP (intermediate) unit, at 16 bits:
# measured on an H200 and rounded up (see above).
PER_HIDDEN, PER_INTERMEDIATE = 28, 7

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes the training will need on the GPU beyond what is allocated when vLLM starts."""

    optimizer: int
    activations: int


def training_memory(
    cfg: GRPOConfig,
    trainable: int,
    param_bytes: int,
    hidden: int,
    intermediate: int,
    layers: int,
    vocab: int,
    dtype_bytes: int,
) -> TrainingMemory:
    """The update's needs, from the config and the policy's shape (see the module's docstring)."""
    tokens = cfg.micro_batch * (cfg.max_prompt_tokens + cfg.max_new_tokens)
    layer_activations = (PER_HIDDEN * hidden + PER_INTERMEDIATE * intermediate) * layers * tokens * dtype_bytes // 2
    logits = tokens * vocab * 2 * dtype_bytes + cfg.micro_batch * cfg.max_new_tokens * vocab * 12
    return TrainingMemory(optimizer=trainable * (3 * param_bytes + 8), activations=layer_activations + logits)


def vllm_floor(cfg: GRPOConfig, weight_bytes: int, kv_bytes_per_token: int) -> int:
    """The least vLLM can work with: its weights, the KV cache of one group and its own overhead."""
    return (
        weight_bytes
        + cfg.group_size * (cfg.max_prompt_tokens + cfg.max_new_tokens) * kv_bytes_per_token
        + VLLM_OVERHEAD
    )


def vllm_memory_share(total: int, free: int, need: TrainingMemory, sleeps: bool, floor: int) -> float:
    """vLLM's `gpu_memory_utilization`: what is free less what training needs later (its activations only
    when vLLM stays awake through the update) and a margin of 5% of the GPU, as a fraction of the GPU's
    total, at most 0.9. Raises ValueError, with what to change, when that is below `floor`."""
    keep = need.optimizer + int(MARGIN * total) + (0 if sleeps else need.activations)
    vllm_bytes = min(free - keep, int(MAX_SHARE * total))
    if vllm_bytes < floor:
        raise ValueError(
            f"in-process vLLM would get {vllm_bytes / GiB:.1f} GiB beside training ({free / GiB:.1f} GiB free of "
            f"{total / GiB:.1f}; training keeps {keep / GiB:.1f} GiB: optimizer {need.optimizer / GiB:.1f}, update "
            f"activations {need.activations / GiB:.1f}{' (vLLM asleep: not counted)' if sleeps else ''}, margin "
            f"{MARGIN:.0%}) but needs {floor / GiB:.1f} GiB (weights, one group's KV cache, 1 GiB): lower "
            "--micro-batch or --max-prompt-tokens, use vLLM's sleep mode (--vllm-sleep, CUDA vLLM), set "
            "--vllm-memory yourself, or roll out on a vLLM server (--engine openai)"
        )
    return vllm_bytes / total


def policy_memory(cfg: GRPOConfig, model: Any) -> tuple[TrainingMemory, int]:
    """The update's needs and vLLM's least bytes (`vllm_floor`) for this policy (a peft model) and config."""
    config = model.config
    hidden, layers = config.hidden_size, config.num_hidden_layers
    intermediate = getattr(config, "intermediate_size", None) or 4 * hidden
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    params = list(model.parameters())
    dtype_bytes = params[0].element_size()
    trainable = [p for p in params if p.requires_grad]
    frozen_bytes = sum(p.numel() * p.element_size() for p in params if not p.requires_grad)
    need = training_memory(
        cfg,
        sum(p.numel() for p in trainable),
        trainable[0].element_size() if trainable else 4,
        hidden,
        intermediate,
        layers,
        config.vocab_size,
        dtype_bytes,
    )
    return need, vllm_floor(cfg, frozen_bytes, 2 * layers * kv_heads * head_dim * dtype_bytes)


def default_share(cfg: GRPOConfig, model: Any, sleeps: bool) -> float:
    """vLLM's share of this process's GPU, measured now (call it with the policy and reward model loaded)."""
    need, floor = policy_memory(cfg, model)
    torch.cuda.empty_cache()  # cached but unused blocks are free for vLLM
    free, total = torch.cuda.mem_get_info()
    share = vllm_memory_share(total, free, need, sleeps, floor)
    log.warning(
        "in-process vLLM gets %.2f of the GPU (%.1f GiB): %.1f GiB free, training keeps optimizer %.2f GiB%s, "
        "margin %.0f%%; --vllm-memory sets it",
        share,
        share * total / GiB,
        free / GiB,
        need.optimizer / GiB,
        "" if sleeps else f" and update activations {need.activations / GiB:.1f} GiB",
        MARGIN * 100,
    )
    return share


@contextmanager
def asleep(engine: Any) -> Iterator[None]:
    """vLLM asleep for the block (level 1: weights to CPU memory, KV cache dropped) when the engine was built
    with sleep mode (`VLLMEngine(sleep_mode=True)` on a platform that has it); otherwise nothing happens.
    On waking, the training's cached blocks go back to the driver first, so vLLM can map its memory again."""
    if not getattr(engine, "sleep_mode", False):
        yield
        return
    engine.llm.sleep(level=1)
    try:
        yield
    finally:
        torch.cuda.empty_cache()
        engine.llm.wake_up()
