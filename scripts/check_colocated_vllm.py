"""Check in-process vLLM beside training on one CUDA GPU: sleep mode frees vLLM's memory and wakes it intact, and
GRPO in the env with `--engine vllm` sizes vLLM's share from what training leaves and sleeps it during updates.

    python -m scripts.check_colocated_vllm [--model embedded] [--out runs/check_colocated_vllm] [--estimate-only]

Needs a CUDA GPU and vLLM's CUDA build (`pip install vllm`) in this environment; `--estimate-only` runs check 0
alone, without vLLM. Prints one JSON object and exits 1 if a check fails. About 3-5 minutes (two vLLM starts,
two short GRPO steps).

0. The update's memory against trainers.colocate's estimate: real `Learner.update`s on one micro-batch of
   `--micro-batch` sequences of `--prompt-tokens` + `--new-tokens` (random ids), every sequence whole and then the
   shared-prompt way; the peak allocation above what was allocated before each must not exceed the estimate
   (optimizer + activations). Also the share vLLM would get beside this policy, awake and asleep in updates.

1. A `VLLMEngine(sleep_mode=True, memory_fraction=0.3)`: greedy replies, then `llm.sleep(level=1)`: the GPU's
   free memory must rise by most of vLLM's share; after `llm.wake_up()` the same greedy replies.
2. `sotopia-env grpo --rollout env --engine vllm` (2 steps, scripted partner, an untrained reward model), share
   unset: the summary states the derived share and that vLLM slept; during each update the free memory is
   measured inside the sleep (it must be higher than just before), and step 2's rollouts (after a wake) sample.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import trainers.learner as grpo
from agents.engine import SamplingParams
from agents.vllm_engine import VLLMEngine, sleep_mode_unavailable
from rewards.reward_model import RewardModel, RewardModelConfig
from sotopia_env.jsonio import iter_jsonl
from trainers.colocate import default_share, policy_memory
from trainers.grpo import GRPOConfig, train_grpo
from trainers.learner import Group, Learner

GiB = 1 << 30


def free_gib() -> float:
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0] / GiB


def check_sleep_and_wake(model: str) -> dict[str, Any]:
    reason = sleep_mode_unavailable()
    engine = VLLMEngine(model, memory_fraction=0.3, sleep_mode=True, max_model_len=2048)
    chats = [[{"role": "user", "content": f"Say something about the number {k}."}] for k in range(4)]
    greedy = SamplingParams(max_new_tokens=24, temperature=0.0)
    before = [s[0].token_ids for s in engine.generate(chats, greedy)]
    awake = free_gib()
    engine.llm.sleep(level=1)
    asleep = free_gib()
    engine.llm.wake_up()
    woken = free_gib()
    after = [s[0].token_ids for s in engine.generate(chats, greedy)]
    engine.close()
    freed = asleep - awake
    return {
        "sleep_mode_unavailable": reason,
        "engine_sleep_mode": engine.sleep_mode,
        "free_gib_awake": round(awake, 2),
        "free_gib_asleep": round(asleep, 2),
        "free_gib_woken": round(woken, 2),
        "freed_gib": round(freed, 2),
        "same_greedy_replies_after_wake": before == after,
        # vLLM took 0.3 of the GPU; level 1 gives back its weights and KV cache (CUDA graphs may stay).
        "ok": reason is None and engine.sleep_mode and freed > 0.5 * 0.3 * total_gib() and before == after,
    }


def total_gib() -> float:
    return torch.cuda.mem_get_info()[1] / GiB


def check_update_memory(model: str, out: Path, micro_batch: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    group = 4
    cfg = GRPOConfig(
        base=model,
        out=str(out / "estimate"),
        micro_batch=micro_batch,
        group_size=group,
        prompts_per_step=micro_batch // group,
        max_prompt_tokens=prompt_tokens,
        max_new_tokens=new_tokens,
        tensorboard=False,
    )
    learner = Learner(cfg, progress=False)
    need, floor = policy_memory(cfg, learner.model)
    # The share in-process vLLM would get here now, with the policy loaded (no reward model in this check).
    shares = {
        "awake": default_share(cfg, learner.model, sleeps=False),
        "asleep": default_share(cfg, learner.model, True),
    }
    shape = {"hidden": learner.model.config.hidden_size, "layers": learner.model.config.num_hidden_layers}
    vocab = learner.model.config.vocab_size
    rng = random.Random(0)
    groups = [
        Group(
            [rng.randrange(vocab) for _ in range(prompt_tokens)],
            [[rng.randrange(vocab) for _ in range(new_tokens)] for _ in range(group)],
            [rng.gauss(0, 1) for _ in range(group)],
        )
        for _ in range(micro_batch // group)
    ]
    peaks = {}
    # First every sequence whole (the estimate's basis; the optimizer state is made here), then the shared-prompt way.
    for step, shared in enumerate((False, True)):
        learner.cfg.shared_prompt = shared
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        learner.update(step, groups)
        torch.cuda.synchronize()
        peaks["shared_prompt" if shared else "plain"] = torch.cuda.max_memory_allocated() - base
    learner.close()
    del learner
    torch.cuda.empty_cache()
    estimate = need.optimizer + need.activations
    return {
        "model": shape,
        "sequences": micro_batch,
        "tokens_each": prompt_tokens + new_tokens,
        "update_peak_gib": {k: round(v / GiB, 3) for k, v in peaks.items()},
        "estimate_gib": round(estimate / GiB, 3),
        "estimate_optimizer_gib": round(need.optimizer / GiB, 4),
        "estimate_activations_gib": round(need.activations / GiB, 3),
        "vllm_floor_gib": round(floor / GiB, 3),
        "vllm_share": {k: round(v, 3) for k, v in shares.items()},
        "estimate_over_plain_peak": round(estimate / max(peaks["plain"], 1), 2),
        "ok": all(estimate >= v for v in peaks.values()),
    }


def check_grpo(model: str, out: Path) -> dict[str, Any]:
    measured: list[dict[str, float]] = []
    real_asleep = grpo.colocate.asleep

    @contextmanager
    def measuring(engine: Any):
        before = free_gib()
        with real_asleep(engine):
            measured.append({"before": round(before, 2), "inside": round(free_gib(), 2)})
            yield
        measured[-1]["after_wake"] = round(free_gib(), 2)

    grpo.colocate.asleep = measuring
    RewardModel.create(RewardModelConfig(base=model, max_length=384)).save(out / "rm")
    cfg = GRPOConfig(
        base=model,
        reward_model=str(out / "rm"),
        out=str(out / "grpo"),
        rollout="env",
        credit="turn",
        partner="scripted",
        engine="vllm",
        steps=2,
        prompts_per_step=4,
        group_size=4,
        max_turns=4,
        max_new_tokens=32,
        max_prompt_tokens=384,
        heldout_states=2,
        save_every=1,
        tensorboard=False,
    )
    summary = train_grpo(cfg, progress=False)
    rows = list(iter_jsonl(out / "grpo" / "metrics.jsonl"))
    return {
        "vllm_memory": summary.get("vllm_memory"),
        "vllm_sleep": summary.get("vllm_sleep"),
        "updates": measured,
        "new_tokens_per_step": [r["new_tokens"] for r in rows],
        "ok": bool(summary.get("vllm_sleep"))
        and len(measured) == 2
        and all(m["inside"] > m["before"] + 0.1 for m in measured)
        and all(r["new_tokens"] > 0 for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--out", default="runs/check_colocated_vllm")
    parser.add_argument("--estimate-only", action="store_true", help="check 0 only (no vLLM needed)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=600)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU here: run this on a CUDA machine with vLLM's CUDA build installed", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "total_gib": round(total_gib(), 2)}
    report["update_memory"] = check_update_memory(
        args.model, out, args.micro_batch, args.prompt_tokens, args.new_tokens
    )
    if not args.estimate_only:
        report["sleep_and_wake"] = check_sleep_and_wake(args.model)
        report["grpo_env_vllm"] = check_grpo(args.model, out)
    report["ok"] = all(part["ok"] for part in report.values() if isinstance(part, dict))
    print(json.dumps(report, indent=1))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
