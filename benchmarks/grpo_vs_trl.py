"""GRPO step time: ours against TRL's GRPOTrainer, side by side in one run.

    pip install -e .[bench]        # TRL is a benchmark-only extra
    python -m benchmarks.grpo_vs_trl [--steps 4] [--prompts-per-step 4] [--group-size 4] [--max-new-tokens 24]

Same model (the embedded SmolLM2 with the same LoRA: r 16, alpha 32, q/k/v/o of the top layers), same
dialogue states (B real observation prompts, every step), same G, same completion budget, same reward
model, the same generation backend (transformers `generate`), the same loss family (per-sequence mean,
clipped ratio, KL to the adapter-disabled base with beta 0.04, one update per batch) and no gradient
checkpointing on either side. Three rows: TRL; ours with every sample's prompt run separately (the plain
way, as TRL does it); ours with each state's prompt run once per group (`grouped_logprobs`, the default).
A step is sample -> score -> update; the first step of each is a warm-up and is not counted. CPU float32
or GPU bfloat16, whichever torch sees.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from sotopia_env.jsonio import append_jsonl, iter_jsonl, write_json_atomic


def write_states(path: Path, count: int, seed: int) -> list[str]:
    from sotopia_env import split
    from trainers.offline import states_online

    states = [s.prompt for s in states_online(count, [s.id for s in split("hard")], seed)]
    for s in states:
        append_jsonl(path, {"prompt": s})
    return states


def run_ours(args, rm_dir: Path, prompts: Path, out: Path, shared: bool, rollout_mode: str = "auto") -> dict:
    from trainers.grpo import GRPOConfig, train_grpo

    cfg = GRPOConfig(
        reward_model=str(rm_dir),
        prompts=str(prompts),
        out=str(out),
        steps=args.steps + 1,
        prompts_per_step=args.prompts_per_step,
        group_size=args.group_size,
        max_new_tokens=args.max_new_tokens,
        max_prompt_tokens=4096,
        lr=1e-3,
        warmup_steps=1,
        micro_batch=args.prompts_per_step * args.group_size,
        lora_layers=args.lora_layers,
        heldout_states=1,
        eval_samples=1,
        save_every=10_000,
        seed=args.seed,
        tensorboard=False,
        shared_prompt=shared,
        rollout_mode=rollout_mode,
    )
    train_grpo(cfg, progress=False)
    records = list(iter_jsonl(out / "metrics.jsonl"))[1:]
    step = [r["time_generate"] + r["time_score"] + r["time_update"] + r["time_sync"] for r in records]
    return {
        "step_s": statistics.median(step),
        "generate_s": statistics.median(r["time_generate"] for r in records),
        "score_s": statistics.median(r["time_score"] for r in records),
        "update_s": statistics.median(r["time_update"] for r in records),
        "new_tokens_per_step": statistics.mean(r["new_tokens"] for r in records),
    }


def run_trl(args, rm_dir: Path, states: list[str], out: Path, cache_implementation: str | None = None) -> dict:
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from agents.llm_agent import build_messages, parse_reply
    from agents.models import default_device, default_dtype, resolve_model
    from rewards.reward_model import RewardModel

    device = default_device()
    path = resolve_model("embedded")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, default_dtype(device)))
    n = model.config.num_hidden_layers
    lora = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        layers_to_transform=list(range(n - args.lora_layers, n)),
    )
    rm = RewardModel.load(rm_dir)

    def reward(prompts, completions, **kwargs):  # the same parse + score as our trainer
        return rm.score(
            [p[-1]["content"] for p in prompts], [parse_reply(c[-1]["content"]).argument for c in completions]
        )

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_begin(self, *a, **k):
            if device == "cuda":
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *a, **k):
            if device == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    batch = args.prompts_per_step * args.group_size
    dataset = Dataset.from_list([{"prompt": build_messages({"prompt": s})} for s in states] * (args.steps + 2))
    config = trl.GRPOConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        num_generations=args.group_size,
        steps_per_generation=1,
        max_completion_length=args.max_new_tokens,
        beta=0.04,
        loss_type="grpo",
        epsilon=0.2,
        learning_rate=1e-3,
        max_steps=args.steps + 1,
        gradient_checkpointing=False,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=device == "cpu",
        bf16=device == "cuda",
        temperature=1.0,
        top_p=1.0,
        seed=args.seed,
        shuffle_dataset=False,
        disable_dropout=True,
        warmup_steps=1,
        cache_implementation=cache_implementation,
    )
    timer = StepTimer()
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h][1:]
    return {
        "step_s": statistics.median(timer.times[1:]),
        "new_tokens_per_step": statistics.mean(lengths) * batch if lengths else None,
        "trl": trl.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (one more runs first as a warm-up)")
    parser.add_argument("--prompts-per-step", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--lora-layers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/bench/grpo_vs_trl.json")
    args = parser.parse_args()

    import torch

    from agents.models import default_device, resolve_model
    from rewards.reward_model import RewardModel, RewardModelConfig

    resolve_model("embedded")  # convert the GGUF once, outside any timing
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        RewardModel.create(RewardModelConfig(max_length=1024)).save(tmp / "rm")  # untrained: the cost is what counts
        states = write_states(tmp / "prompts.jsonl", args.prompts_per_step + 1, args.seed)
        heldout_first = _heldout_order(states, args.seed)  # ours holds one state out: TRL gets the same B states
        rows = {
            "trl": run_trl(args, tmp / "rm", heldout_first[1:], tmp / "trl"),
            "ours_plain": run_ours(
                args, tmp / "rm", tmp / "prompts.jsonl", tmp / "ours_plain", shared=False, rollout_mode="generate"
            ),
            "ours": run_ours(args, tmp / "rm", tmp / "prompts.jsonl", tmp / "ours", shared=True),
        }
        if default_device() == "cuda":  # both with a static KV cache (compiled decoding): the fast transformers path
            rows["trl_static"] = _guarded(
                lambda: run_trl(args, tmp / "rm", heldout_first[1:], tmp / "trl_static", "static")
            )
        from transformers import AutoTokenizer

        from agents.models import chat_token_ids

        tok = AutoTokenizer.from_pretrained(resolve_model("embedded"))
        prompt_tokens = statistics.mean(
            len(chat_token_ids(tok, _msgs(s), add_generation_prompt=True)) for s in heldout_first[1:]
        )
    result = {
        "benchmark": "grpo_vs_trl",
        "device": default_device(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "config": vars(args),
        "mean_prompt_tokens": prompt_tokens,
        "rows": rows,
        "ratio_ours_to_trl": rows["ours"]["step_s"] / rows["trl"]["step_s"],
        "ratio_ours_plain_to_trl": rows["ours_plain"]["step_s"] / rows["trl"]["step_s"],
    }
    if "step_s" in rows.get("trl_static", {}):
        result["ratio_ours_to_trl_static"] = rows["ours"]["step_s"] / rows["trl_static"]["step_s"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, result)
    print(json.dumps(result, indent=1))


def _guarded(fn) -> dict:
    try:
        return fn()
    except Exception as exc:  # a peer configuration that fails is reported, not fatal
        return {"error": f"{type(exc).__name__}: {exc}"[:400]}


def _msgs(state: str) -> list[dict[str, str]]:
    from agents.llm_agent import build_messages

    return build_messages({"prompt": state})


def _heldout_order(states: list[str], seed: int) -> list[str]:
    import random

    shuffled = list(states)
    random.Random(seed).shuffle(shuffled)  # the same shuffle train_grpo applies before holding states out
    return shuffled


if __name__ == "__main__":
    main()
