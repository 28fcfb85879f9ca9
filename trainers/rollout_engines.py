"""Which engine samples a GRPO run's rollouts, its start, its adapter sync and its shutdown: the life-cycle apart
from the update (trainers/learner.py), so the learner reads like an update loop.

- `transformers` (default): the trainer's own live peft model (`TransformersEngine.from_model`), nothing to sync.
- `vllm`: vLLM in-process, started after the policy and the reward model are loaded so its memory share is what
  training leaves (trainers/colocate.py); it sleeps during updates where vLLM can; each update's adapter is pushed
  as a new LoRA version. Its `max_lora_rank` follows the policy's LoRA rank.
- `openai`: a vLLM server with runtime LoRA loading (`--server`); prompts are rendered here and sent as token ids.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from agents.transformers_engine import TransformersEngine
from trainers import colocate, distributed
from trainers.grpo_config import GRPOConfig

# The LoRA ranks vLLM accepts for `max_lora_rank` (vllm.config.lora); a policy's rank r needs the smallest >= r.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_lora_rank(rank: int) -> int:
    """The `max_lora_rank` a vLLM engine needs for adapters of LoRA rank `rank`."""
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if not fitting:
        raise ValueError(f"LoRA rank {rank} is over vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")
    return fitting[0]


def old_versions(folder: Path, keep: int) -> list[Path]:
    """The adapter versions (`step-N` folders) beside `folder`, the one just pushed, to remove so that `keep`
    remain with it, oldest first. Versions numbered after it (left by a run that went further before a resume)
    are not counted and stay; the run saves over them."""
    steps = {int(p.name[5:]): p for p in folder.parent.glob("step-*") if p.name[5:].isdigit()}
    pushed = next((n for n, p in steps.items() if p.name == folder.name), None)
    older = [steps[n] for n in sorted(steps) if pushed is not None and n < pushed]
    return older[: max(0, len(older) - (keep - 1))]


def check_given_engine(cfg: GRPOConfig, engine: Any) -> None:
    """Refuse, before any model loads, a ready vLLM engine that cannot take this run's adapters (vLLM would only
    fail at the first generate, after every model loaded)."""
    if cfg.engine != "vllm" or engine is None:
        return
    have = getattr(engine, "max_lora_rank", None)
    if have is not None and have < cfg.lora_r:
        raise ValueError(
            f"the given vLLM engine was built with max_lora_rank={have}, under --lora-r {cfg.lora_r}: build it "
            f"with max_lora_rank={vllm_lora_rank(cfg.lora_r)} or lower --lora-r"
        )


class RolloutEngines:
    """The engines of one run: `local` (the live model, always there: evaluation and a fallback) and `rollout`
    (what samples the rollouts: `local`, in-process vLLM or a server). `push(model, folder)` makes `rollout` sample
    from the model's current adapter; `close()` ends what this run started and gives a shared engine back."""

    def __init__(self, cfg: GRPOConfig, model: Any, tokenizer: Any, given: Any = None) -> None:
        self.cfg = cfg
        mode = cfg.rollout_mode
        if mode == "auto":
            mode = "static" if next(model.parameters()).is_cuda else "generate"
        self.local: Any = TransformersEngine.from_model(
            model,
            tokenizer,
            model_name=f"grpo:{cfg.base}",
            batch_size=cfg.prompts_per_step * cfg.group_size,
            max_prompt_tokens=cfg.max_prompt_tokens,
            mode=mode,
        )
        self.remote: Any = None  # vLLM in-process or a server, when the rollouts are not the live model's
        self.owned = given is None
        if cfg.engine == "vllm":
            from agents.vllm_engine import VLLMEngine

            check_given_engine(cfg, given)
            share = cfg.vllm_memory
            if share is None and torch.cuda.is_available() and given is None:
                share = colocate.default_share(cfg, model, sleeps=cfg.vllm_sleep)
            self.remote = given or VLLMEngine(
                cfg.base,
                max_prompt_tokens=cfg.max_prompt_tokens,
                memory_fraction=share,
                sleep_mode=cfg.vllm_sleep,
                max_lora_rank=vllm_lora_rank(cfg.lora_r),
            )
            # One budget for sampling and training; a given engine gets its own back at close(): it may be
            # shared (a judge's prompt does not fit a policy's budget).
            self.given_budget = self.remote.max_prompt_tokens
            self.remote.max_prompt_tokens = cfg.max_prompt_tokens
        elif cfg.engine == "openai":
            from agents.openai_engine import OpenAIEngine
            from agents.spec import parse_spec

            spec = parse_spec(cfg.server)
            self.remote = given or OpenAIEngine(
                spec.model, base_url=spec.base_url, tokenizer=tokenizer, max_prompt_tokens=cfg.max_prompt_tokens
            )
        self.rollout = self.remote or self.local
        # The in-process engine that sleeps during updates: one built (or given) with sleep mode, if asked for.
        sleeps = cfg.engine == "vllm" and cfg.vllm_sleep and getattr(self.remote, "sleep_mode", False)
        self.sleeper = self.remote if sleeps else None

    def push(self, model: Any, folder: Path) -> None:
        """Make the rollout engine sample from the model's trainable adapter: the live model already does; vLLM
        gets it as a new version. Under torch.distributed every rank holds the same weights and saves its own
        copy (the main rank to `folder`, rank R to `folder`/../rank-R/...): no rank reads a folder another wrote,
        so ranks need no shared disk."""
        if self.remote is None:
            return
        rank = distributed.world().rank
        if rank:
            folder = folder.parent / f"rank-{rank}" / folder.name
        model.save_pretrained(folder, selected_adapters=["default"])  # the trained adapter, not the reference
        self.remote.load_adapter(str(folder))
        for old in old_versions(folder, self.cfg.keep_adapters):  # only once the new version is sampling
            self.remote.unload_adapter(str(old))
            shutil.rmtree(old)

    def summary(self) -> dict[str, Any]:
        """The colocated engine's memory share and whether it slept during updates (in-process vLLM only)."""
        if self.cfg.engine != "vllm":
            return {}
        cache = self.remote.llm.llm_engine.vllm_config.cache_config
        return {"vllm_memory": cache.gpu_memory_utilization, "vllm_sleep": self.sleeper is not None}

    def close(self) -> None:
        if self.remote is None:
            return
        if self.owned and hasattr(self.remote, "close"):
            self.remote.close()
        elif self.cfg.engine == "vllm":
            self.remote.max_prompt_tokens = self.given_budget
