"""GRPO for social dialogue: sample G utterances per dialogue state, score them with the reward model,
update a LoRA policy with a clipped, group-relative policy gradient and a KL penalty to the starting policy.

    sotopia-env grpo --reward-model runs/rm/best --episodes runs/episodes.jsonl --steps 50

Reads top to bottom: the GRPO math (advantages, loss, LR schedule: pure functions); prompts; the policy;
then one step = sample -> score -> advantages -> loss -> adapter sync. The config, `GRPOConfig`, lives in
trainers/grpo_config.py (no torch there, for the CLI).
Prompts are dialogue states: Sotopia-RL's single-turn mode takes the states of recorded episodes
(`--episodes`); without episodes, states come from rolling the env with the current policy against a
scripted partner. The KL reference is the policy training starts from: the init adapter (e.g. BC's) loaded
a second time, frozen; without one, the base model with the adapter disabled (a fresh LoRA starts with B = 0,
so the two are the same policy). Log-probs are taken at the sampling temperature, the distribution sampled from.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from trainers.grpo_config import GRPOConfig  # noqa: F401 - re-exported: the trainer's config

# --- GRPO math: pure functions the training loop calls ------------------------------------------


def group_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """[B, G] rewards (G samples of each of B states) -> [B, G] advantages: each sample's reward against
    its own group's mean, in units of the group's (unbiased) standard deviation. The 1e-4 keeps a group
    whose samples all scored the same at advantage 0 instead of 0 / 0."""
    mean, std = rewards.mean(1, keepdim=True), rewards.std(1, keepdim=True)
    return (rewards - mean) / (std + 1e-4)


def grpo_loss(
    logprobs: list[torch.Tensor],
    old_logprobs: list[torch.Tensor],
    ref_logprobs: list[torch.Tensor],
    advantages: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective over N sampled sequences, as a loss to minimise; returns (loss, stats).

    logprobs: N tensors [T_i], the sequences' tokens under the policy being trained (carrying gradients);
    old_logprobs: the same under the policy that sampled them; ref_logprobs: under the KL reference.
    advantages: [N], one per sequence, shared by its tokens. Per token: ratio r = exp(lp - old), surrogate
    min(r A, clip(r, 1 - eps, 1 + eps) A), and the k3 estimate of KL(policy || reference),
    exp(ref - lp) - (ref - lp) - 1. A sequence's loss is the mean over its tokens of
    -(surrogate - kl_coef * kl), so a long reply weighs as much as a short one; the loss is their mean.
    stats (means over sequences of per-sequence token means): kl as computed, not clamped (it is >= 0 up to
    rounding), and clip_frac, the fraction of tokens whose ratio left [1 - eps, 1 + eps]."""
    losses, kls, clipped = [], [], []
    for lp, old, ref, adv in zip(logprobs, old_logprobs, ref_logprobs, advantages, strict=True):
        ratio = torch.exp(lp - old)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
        delta = ref - lp
        kl = torch.expm1(delta) - delta
        losses.append(-(surrogate - kl_coef * kl).mean())
        kls.append(kl.mean().detach())
        clipped.append(((ratio - 1).abs() > clip_eps).float().mean())
    stats = {"kl": torch.stack(kls).mean().item(), "clip_frac": torch.stack(clipped).mean().item()}
    return torch.stack(losses).mean(), stats


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of update `step` (0-based) as a fraction of the configured peak: a linear warm-up
    that reaches the peak at step `warmup_steps`, then a cosine decay towards 0 at `total_steps` (the last
    update, total_steps - 1, still moves the policy)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


# --- prompts -------------------------------------------------------------------------------------


def states_from_episodes(path: str) -> list[str]:
    from sotopia_env import read_episodes
    from sotopia_env.replay import utterance_states

    return [s.prompt for ep in read_episodes(path) for s in utterance_states(ep)]


def states_online(count: int, split_name: str, seed: int) -> list[str]:
    """States met by playing a few turns against a scripted partner (the policy's own turns are also scripted
    here: only the states matter, and this keeps prompt collection model-free and fast)."""
    from sotopia_env import ScriptedPolicy, SocialParallelEnv, split

    rng = random.Random(seed)
    scenarios = split(split_name)
    partner = ScriptedPolicy(["Hello. What brings you here?", "I see. What do you suggest?", "Hmm, tell me more."])
    openers = ["Hi, thanks for meeting me.", "I wanted to talk about something.", "Good to see you."]
    env = SocialParallelEnv(scenarios=scenarios, max_turns=20)
    states = []
    while len(states) < count:
        obs, _ = env.reset(seed=rng.randrange(1 << 30))
        for _ in range(rng.randrange(0, 3)):  # 0-2 exchanges before the state we keep
            obs, *_ = env.step({"agent_0": rng.choice(openers)})
            obs, *_ = env.step({"agent_1": partner.act(obs["agent_1"])})
        states.append(obs["agent_0"]["prompt"])
    return states


# --- the policy ----------------------------------------------------------------------------------


def load_policy(cfg: GRPOConfig) -> tuple[Any, Any]:
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agents.models import default_device, default_dtype, resolve_model

    device = default_device()
    path = resolve_model(cfg.base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, default_dtype(device))).to(device)
    if cfg.init_adapter:
        model = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True)
        # disable_adapter() would drop the init adapter too; the KL reference is this starting policy, frozen.
        model.load_adapter(cfg.init_adapter, adapter_name=REFERENCE, is_trainable=False)
    else:
        n = model.config.num_hidden_layers
        layers = list(range(n - cfg.lora_layers, n)) if cfg.lora_layers else None
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            layers_to_transform=layers,
        )
        model = get_peft_model(model, lora)
    return model, tokenizer


REFERENCE = "reference"  # the peft adapter name of the frozen starting policy, when training starts from an adapter


@contextmanager
def reference_policy(model: Any) -> Iterator[None]:
    """Within this block `model` is the KL reference: the frozen copy of the init adapter, or the base model
    when training started from a fresh LoRA. The trainable adapter is active again afterwards."""
    if REFERENCE not in model.peft_config:
        with model.disable_adapter():
            yield
        return
    # peft's set_adapter also sets requires_grad: inference_mode keeps the reference frozen, and
    # switching back makes the trainable adapter trainable again (and the reference frozen).
    model.set_adapter(REFERENCE, inference_mode=True)
    try:
        yield
    finally:
        model.set_adapter("default")


def sequence_logprobs(
    model: Any, prompts: list[list[int]], completions: list[list[int]], pad_id: int, temperature: float = 1.0
) -> list[torch.Tensor]:
    """Per-token log-probabilities of each completion given its prompt, under the distribution sampled from at
    `temperature` (log_softmax(logits / T)): a list of [len(completion)] tensors.

    The plain way: every (prompt + completion) is one sequence. `grouped_logprobs` gives the same numbers
    running each shared prompt once; this one stays as its reference (tests compare the two)."""
    seqs = [p + c for p, c in zip(prompts, completions)]
    width = max(map(len, seqs))
    device = next(model.parameters()).device
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, device=device)
        mask[i, : len(s)] = 1
    logits = model(input_ids=ids, attention_mask=mask).logits  # [N, T, V]
    out = []
    for i, (p, c) in enumerate(zip(prompts, completions)):
        step_logits = logits[i, len(p) - 1 : len(p) - 1 + len(c)].float()  # position t predicts token t+1
        out.append(
            (step_logits / temperature).log_softmax(-1).gather(-1, torch.tensor(c, device=device)[:, None]).squeeze(-1)
        )
    return out


def grouped_logprobs(
    model: Any, prompts: list[list[int]], groups: list[list[list[int]]], pad_id: int, temperature: float = 1.0
) -> list[torch.Tensor]:
    """Per-token log-probabilities (at `temperature`) of G completions per prompt, running each prompt
    through the model once.

    GRPO samples G completions of one dialogue state, and the state (hundreds of tokens) is much longer
    than a completion (tens). The prompts go through the model once, left-padded, filling a KV cache; the
    cache is repeated G times and the completions run on top of it. Gradients flow through the shared
    cache into the prompt's pass, so the result, values and gradients, equals `sequence_logprobs` on the
    concatenated sequences while the prompt tokens cost 1/G of the work. Returns one tensor per
    completion, in group order."""
    device = next(model.parameters()).device
    g = len(groups[0])
    if any(len(group) != g for group in groups):
        raise ValueError("every prompt needs the same number of completions")
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, device=device)
        mask[i, width - len(p) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    head = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = head.past_key_values
    cache.batch_repeat_interleave(g)

    completions = [c for group in groups for c in group]
    length = max(map(len, completions))
    cids = torch.full((len(completions), length), pad_id, dtype=torch.long, device=device)
    cmask = torch.zeros_like(cids)
    for i, c in enumerate(completions):
        cids[i, : len(c)] = torch.tensor(c, device=device)
        cmask[i, : len(c)] = 1
    cpositions = positions[:, -1:].repeat_interleave(g, 0) + 1 + torch.arange(length, device=device)
    tail = model(
        input_ids=cids,
        attention_mask=torch.cat([mask.repeat_interleave(g, 0), cmask], 1),
        position_ids=cpositions,
        past_key_values=cache,
        use_cache=True,
    )
    # Token 0 of a completion is predicted by the prompt's last position, token t by completion position t-1.
    logits = torch.cat([head.logits[:, -1:].repeat_interleave(g, 0), tail.logits[:, :-1]], 1)
    out = []
    for i, c in enumerate(completions):
        step = (logits[i, : len(c)].float() / temperature).log_softmax(-1)
        out.append(step.gather(-1, torch.tensor(c, device=device)[:, None]).squeeze(-1))
    return out


def group_logprobs(
    model: Any, prompt_ids: list[list[int]], completions: list[list[int]], states: range, cfg: GRPOConfig, pad_id: int
) -> list[torch.Tensor]:
    """Log-probs of the completions of `states` (G consecutive completions per state), the shared-prompt
    way or the plain way as the config says."""
    groups = [completions[k * cfg.group_size : (k + 1) * cfg.group_size] for k in states]
    if cfg.shared_prompt:
        return grouped_logprobs(model, [prompt_ids[k] for k in states], groups, pad_id, cfg.temperature)
    return sequence_logprobs(
        model,
        [prompt_ids[k] for k in states for _ in range(cfg.group_size)],
        [c for g in groups for c in g],
        pad_id,
        cfg.temperature,
    )


# --- training ------------------------------------------------------------------------------------


def train_grpo(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """Run GRPO as configured; returns the summary (also in OUT/summary.json).

    rollout_engine: with `engine="vllm"`, a ready `VLLMEngine` on the same base model to use (and leave
    open) instead of starting one; its adapter is replaced as training goes."""
    from tqdm import tqdm

    from agents.engine import SamplingParams, request_seed
    from agents.llm_agent import build_messages, parse_reply
    from agents.transformers_engine import TransformersEngine
    from rewards.reward_model import RewardModel
    from sotopia_env.episode import iter_jsonl
    from trainers.checkpoint import load_checkpoint, read_metrics, resume_metrics, save_checkpoint

    cfg.validate()  # fields may have been set after construction
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1))

    # Prompts: a fixed, seeded split into training and held-out states.
    if cfg.prompts:
        if not Path(cfg.prompts).is_file():
            raise FileNotFoundError(f"--prompts {cfg.prompts}: no such file")
        states = [r["prompt"] for r in iter_jsonl(cfg.prompts)]
    elif cfg.episodes:
        states = states_from_episodes(cfg.episodes)
    else:  # the pool size is not tied to steps, so a resumed run sees the same pool
        states = states_online(cfg.heldout_states + cfg.prompts_per_step * 64, cfg.split, cfg.seed)
    random.Random(cfg.seed).shuffle(states)
    heldout, train_states = states[: cfg.heldout_states], states[cfg.heldout_states :]
    if len(train_states) < cfg.prompts_per_step:
        raise ValueError(
            f"only {len(train_states)} training states; need at least prompts_per_step={cfg.prompts_per_step}"
        )

    model, tokenizer = load_policy(cfg)
    rm = RewardModel.load(cfg.reward_model)
    mode = (
        cfg.rollout_mode
        if cfg.rollout_mode != "auto"
        else ("static" if next(model.parameters()).is_cuda else "generate")
    )
    engine: Any = TransformersEngine.from_model(
        model,
        tokenizer,
        model_name=f"grpo:{cfg.base}",
        batch_size=cfg.prompts_per_step * cfg.group_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        mode=mode,
    )
    vllm_engine = None
    if cfg.engine == "vllm":  # rollouts on vLLM; the adapter is pushed after every update
        from agents.vllm_engine import VLLMEngine

        vllm_engine = rollout_engine or VLLMEngine(cfg.base, max_prompt_tokens=cfg.max_prompt_tokens)
        vllm_engine.max_prompt_tokens = cfg.max_prompt_tokens  # one prompt budget for sampling and training
    rollout = vllm_engine or engine

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps))
    start_step = (load_checkpoint(out / "checkpoint", model, optimizer, schedule) or {"step": 0})["step"]
    if vllm_engine is not None:  # vLLM starts from the policy as it stands: init adapter, resumed or fresh LoRA
        _push_adapter(model, vllm_engine, out / "adapters" / f"step-{start_step}")
    writer = _tensorboard(out) if cfg.tensorboard else None
    metrics_path = out / "metrics.jsonl"
    resume_metrics(metrics_path, start_step)  # steps logged after the checkpoint are trained and logged again
    sampling = SamplingParams(
        n=cfg.group_size, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
    )

    def evaluate(tag: str) -> float:
        params_eval = SamplingParams(
            n=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
        )
        # Each held-out state keeps its seed across evaluations: before and after differ by the policy only.
        samples = rollout.generate(
            [build_messages({"prompt": s}) for s in heldout],
            params_eval,
            seeds=[request_seed(cfg.seed, "eval", s) for s in heldout],
        )
        texts = [parse_reply(x.text).argument for group in samples for x in group]
        rewards = rm.score([s for s in heldout for _ in range(cfg.eval_samples)], texts)
        mean = sum(rewards) / len(rewards)
        (out / f"eval_{tag}.json").write_text(json.dumps({"mean_reward": mean, "samples": texts[:20]}, indent=1))
        return mean

    summary: dict[str, Any] = {
        "heldout_reward_before": evaluate("before")
        if start_step == 0
        else json.loads((out / "eval_before.json").read_text())["mean_reward"]
    }
    bar = tqdm(total=cfg.steps, initial=start_step, desc="grpo", unit="step", disable=not progress)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    for step in range(start_step, cfg.steps):
        # 1. Sample G utterances for each of B states. The data order depends only on (seed, step): a resumed
        #    run sees the same prompts and sampling seeds as an uninterrupted one.
        order_rng = random.Random(cfg.seed * 1_000_003 + step)
        batch_states = order_rng.sample(train_states, cfg.prompts_per_step)
        t0 = time.perf_counter()
        convs = [build_messages({"prompt": s}) for s in batch_states]
        model.eval()
        groups = rollout.generate(
            convs, sampling, seeds=[request_seed(cfg.seed, "train", step, s) for s in batch_states]
        )
        t1 = time.perf_counter()

        # 2. Score each utterance as the env would see it (the parsed reply) with the reward model.
        texts = [parse_reply(x.text).argument for g in groups for x in g]
        rewards = torch.tensor(rm.score([s for s in batch_states for _ in range(cfg.group_size)], texts))
        t2 = time.perf_counter()

        # 3. Group-relative advantages: each sample against the other samples of its state.
        advantages = group_advantages(rewards.view(cfg.prompts_per_step, cfg.group_size)).flatten()

        # 4. Clipped surrogate with per-token ratios, KL to the reference (the starting policy), LoRA update.
        #    Micro-batches hold whole groups, so a shared prompt runs once per micro-batch (grouped_logprobs).
        prompt_ids = [g[0].prompt_token_ids for g in groups]  # exactly the ids the engine sampled from
        completions = [_completion_ids(x, tokenizer) for g in groups for x in g]
        per_micro = max(1, cfg.micro_batch // cfg.group_size)
        micro = [range(i, min(i + per_micro, cfg.prompts_per_step)) for i in range(0, cfg.prompts_per_step, per_micro)]

        model.train()
        with torch.no_grad(), reference_policy(model):
            ref_lp = [
                lp for states in micro for lp in group_logprobs(model, prompt_ids, completions, states, cfg, pad_id)
            ]
        old_lp: list[torch.Tensor] | None = None
        stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        lr = optimizer.param_groups[0]["lr"]  # this step's rate (the schedule moves on after the step)
        for _ in range(cfg.updates_per_batch):
            optimizer.zero_grad(set_to_none=True)
            new_old = []
            for states in micro:
                seqs = slice(states[0] * cfg.group_size, (states[-1] + 1) * cfg.group_size)
                lps = group_logprobs(model, prompt_ids, completions, states, cfg, pad_id)
                olds = (
                    [lp.detach() for lp in lps] if old_lp is None else old_lp[seqs]
                )  # first update: the sampler itself
                loss, micro_stats = grpo_loss(lps, olds, ref_lp[seqs], advantages[seqs], cfg.clip_eps, cfg.kl_coef)
                share = len(lps) / len(completions)  # the step's loss is the mean over all its sequences
                (loss * share).backward()
                stats["loss"] += loss.item() * share / cfg.updates_per_batch
                for key, value in micro_stats.items():
                    stats[key] += value * share / cfg.updates_per_batch
                new_old += [lp.detach() for lp in lps]
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm).item()
            optimizer.step()
            if old_lp is None:
                old_lp = new_old  # the sampling policy's log-probs, for the ratios of later updates
        schedule.step()
        t3 = time.perf_counter()

        # 5. Adapter sync: the transformers engine already holds the live weights; vLLM gets a new version.
        if vllm_engine is not None:
            _push_adapter(model, vllm_engine, out / "adapters" / f"step-{step + 1}")
        t4 = time.perf_counter()

        new_tokens = sum(len(c) for c in completions)
        record = {
            "step": step + 1,
            "reward_mean": rewards.mean().item(),
            "reward_std": rewards.std().item(),
            "kl": stats["kl"],
            "clip_frac": stats["clip_frac"],
            "loss": stats["loss"],
            "grad_norm": grad_norm,
            "lr": lr,
            "new_tokens": new_tokens,
            "gen_tokens_per_s": new_tokens / max(t1 - t0, 1e-9),
            "time_generate": t1 - t0,
            "time_score": t2 - t1,
            "time_update": t3 - t2,
            "time_sync": t4 - t3,
        }
        _log(metrics_path, writer, record)
        bar.update(1)
        bar.set_postfix(reward=f"{record['reward_mean']:.2f}", kl=f"{record['kl']:.3f}")
        if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
            save_checkpoint(out / "checkpoint", model, optimizer, schedule, {"step": step + 1})
    bar.close()
    model.save_pretrained(out / "adapter", selected_adapters=["default"])
    summary["heldout_reward_after"] = evaluate("after")
    summary["steps"] = cfg.steps
    summary["temperature"], summary["top_p"] = cfg.temperature, cfg.top_p  # training and evaluation sampled alike
    summary["adapter"] = str(out / "adapter")
    records = read_metrics(metrics_path)
    summary["final_kl"] = records[-1]["kl"] if records else 0.0
    summary["max_kl"] = max((r["kl"] for r in records), default=0.0)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if writer is not None:
        writer.close()
    if vllm_engine is not None and rollout_engine is None:
        vllm_engine.close()
    return summary


def _push_adapter(model: Any, engine: Any, folder: Path) -> None:
    """Save the live adapter and load it into vLLM as a new version (a new LoRARequest name and id)."""
    model.save_pretrained(folder, selected_adapters=["default"])  # the trained adapter, not the frozen reference
    engine.load_adapter(str(folder))


def _completion_ids(sample: Any, tokenizer: Any) -> list[int]:
    """The sampled tokens, ending with EOS when the sample stopped by itself (so stopping is learned too)."""
    ids = list(sample.token_ids)
    while ids and ids[-1] in (tokenizer.eos_token_id, tokenizer.pad_token_id):  # vLLM keeps the EOS; we add it back
        ids.pop()
    if sample.finish_reason == "stop":
        ids.append(tokenizer.eos_token_id)
    return ids or [tokenizer.eos_token_id]


def _log(path: Path, writer: Any, record: dict[str, Any]) -> None:
    from sotopia_env.episode import append_jsonl

    append_jsonl(path, record)
    if writer is not None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(f"grpo/{key}", value, record["step"])


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
