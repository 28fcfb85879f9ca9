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

import math
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from agents.lora import lora_policy
from sotopia_env.jsonio import append_jsonl, read_json, write_json_atomic
from sotopia_env.provenance import check_same_settings
from trainers import colocate, distributed
from trainers.grpo_config import NOT_COMPARED, GRPOConfig  # noqa: F401 - re-exported: the trainer's config
from trainers.logprobs import grouped_logprobs, sequence_logprobs

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


def states_online(count: int, split_name: str, seed: int, library: str | None = None) -> list[str]:
    """States met by playing a few turns against a scripted partner (the policy's own turns are also scripted
    here: only the states matter, and this keeps prompt collection model-free and fast), in the split of the
    shipped library or of a library folder."""
    from agents.runner import load_pool
    from sotopia_env import ScriptedPolicy, SocialParallelEnv, split

    rng = random.Random(seed)
    pool, characters, pairings = load_pool(library)
    scenarios = split(split_name, pool)
    partner = ScriptedPolicy(["Hello. What brings you here?", "I see. What do you suggest?", "Hmm, tell me more."])
    openers = ["Hi, thanks for meeting me.", "I wanted to talk about something.", "Good to see you."]
    env = SocialParallelEnv(scenarios=scenarios, characters=characters, pairings=pairings, max_turns=20)
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
    """The trainable policy (the init adapter, or a fresh LoRA) and its tokenizer; with an init adapter, also
    its frozen copy as the KL reference."""
    model, tokenizer = lora_policy(
        cfg.base, adapter=cfg.init_adapter or None, rank=cfg.lora_r, alpha=cfg.lora_alpha, top_layers=cfg.lora_layers
    )
    if cfg.init_adapter:
        # disable_adapter() would drop the init adapter too; the KL reference is this starting policy, frozen.
        model.load_adapter(cfg.init_adapter, adapter_name=REFERENCE, is_trainable=False)
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


@dataclass
class Group:
    """Sampled replies that share one advantage baseline, with their prompts and advantages.

    Offline and `turn` credit: G replies to one dialogue state (one prompt, run once by `grouped_logprobs`).
    `episode` credit: the replies of one learner turn position in a start's G episodes that were given the same
    prompt (as a rule the first turn, before the episodes part), each with its own advantage; a turn whose
    prompt no other member shares is a group of one."""

    prompt_ids: list[int]
    completions: list[list[int]]
    advantages: list[float]


def group_logprobs(
    model: Any, prompt_ids: list[list[int]], groups: list[list[list[int]]], cfg: GRPOConfig, pad_id: int
) -> list[torch.Tensor]:
    """Log-probs of each group's completions given its prompt, flattened in group order: the shared-prompt way
    when the config asks and some prompt has more than one reply, else the plain way."""
    if cfg.shared_prompt and any(len(g) > 1 for g in groups):
        return grouped_logprobs(model, prompt_ids, groups, pad_id, cfg.temperature)
    return sequence_logprobs(
        model,
        [p for p, g in zip(prompt_ids, groups) for _ in g],
        [c for g in groups for c in g],
        pad_id,
        cfg.temperature,
    )


class Learner:
    """The policy being trained and its one update, shared by every way of collecting data (offline states,
    `turn` and `episode` credit in the env): LoRA policy, KL reference, optimizer and LR schedule, the
    rollout engine kept in sync with the weights, checkpoints with resume, metrics and progress bar.

    rollout_engine: with `engine="vllm"`, a ready `VLLMEngine` on the same base model to use (and leave open)
    instead of starting one; its adapter is replaced after every update."""

    def __init__(self, cfg: GRPOConfig, rollout_engine: Any = None, progress: bool = True) -> None:
        from tqdm import tqdm

        from agents.transformers_engine import TransformersEngine
        from trainers.checkpoint import load_checkpoint, resume_metrics

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.world = distributed.setup()  # a process group under torchrun / accelerate launch, else nothing
        self.model, self.tokenizer = load_policy(cfg)
        mode = (
            cfg.rollout_mode
            if cfg.rollout_mode != "auto"
            else ("static" if next(self.model.parameters()).is_cuda else "generate")
        )
        self.engine: Any = TransformersEngine.from_model(
            self.model,
            self.tokenizer,
            model_name=f"grpo:{cfg.base}",
            batch_size=cfg.prompts_per_step * cfg.group_size,
            max_prompt_tokens=cfg.max_prompt_tokens,
            mode=mode,
        )
        # Rollouts on vLLM (in-process or a server): the adapter is pushed after every update.
        self.vllm_engine: Any = None
        self.owns_vllm = rollout_engine is None
        if cfg.engine == "vllm":
            from agents.vllm_engine import VLLMEngine

            # Started after the policy and the reward model are loaded: its memory share is what training
            # leaves (trainers.colocate); it sleeps during updates where vLLM can.
            share = cfg.vllm_memory
            if share is None and torch.cuda.is_available() and rollout_engine is None:
                share = colocate.default_share(cfg, self.model, sleeps=cfg.vllm_sleep)
            self.vllm_engine = rollout_engine or VLLMEngine(
                cfg.base, max_prompt_tokens=cfg.max_prompt_tokens, memory_fraction=share, sleep_mode=cfg.vllm_sleep
            )
            # One budget for sampling and training; a given engine gets its own back at close(): it may be
            # shared (a judge's prompt does not fit a policy's budget).
            self.given_budget = self.vllm_engine.max_prompt_tokens
            self.vllm_engine.max_prompt_tokens = cfg.max_prompt_tokens
        elif cfg.engine == "openai":  # a vLLM server with runtime LoRA; prompts rendered here, sent as token ids
            from agents.openai_engine import OpenAIEngine
            from agents.spec import parse_spec

            spec = parse_spec(cfg.server)
            self.vllm_engine = rollout_engine or OpenAIEngine(
                spec.model, base_url=spec.base_url, tokenizer=self.tokenizer, max_prompt_tokens=cfg.max_prompt_tokens
            )
        self.rollout = self.vllm_engine or self.engine
        # The in-process engine that sleeps during updates: one built (or given) with sleep mode, if asked for.
        sleeps = cfg.engine == "vllm" and cfg.vllm_sleep and getattr(self.vllm_engine, "sleep_mode", False)
        self.sleeper = self.vllm_engine if sleeps else None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)
        )
        self.start_step = load_checkpoint(self.out / "checkpoint", self.model, self.optimizer, self.schedule) or {}
        self.start_step = self.start_step.get("step", 0)
        distributed.broadcast_parameters(self.params)  # every rank starts from the main rank's policy
        self.version = f"step-{self.start_step}"  # the adapter version now sampling
        if self.vllm_engine is not None:  # vLLM starts from the policy as it stands: init, resumed or fresh LoRA
            _push_adapter(self.model, self.vllm_engine, self.out / "adapters" / self.version)
        self.writer = _tensorboard(self.out) if cfg.tensorboard and self.world.main else None
        self.metrics_path = self.out / "metrics.jsonl"
        if self.world.main:
            resume_metrics(self.metrics_path, self.start_step)  # steps logged after the checkpoint run again
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        show = progress and self.world.main
        self.bar = tqdm(total=cfg.steps, initial=self.start_step, desc="grpo", unit="step", disable=not show)

    def completion_ids(self, sample: Any) -> list[int]:
        return _completion_ids(sample, self.tokenizer)

    def update(self, step: int, groups: list[Group]) -> dict[str, float]:
        """One GRPO update on these groups (clipped surrogate with per-token ratios, KL to the starting policy,
        LoRA step), then the adapter sync. Returns loss, kl, clip_frac, grad_norm, lr and the update's and the
        sync's seconds. Micro-batches hold whole groups, so a shared prompt runs once per micro-batch.

        Under torch.distributed each rank passes its share of the step's groups: the gradients and statistics
        are averaged over ranks weighted by their sequences, so the step is the one on the global batch."""
        cfg, model = self.cfg, self.model
        t0 = time.perf_counter()
        micro: list[list[Group]] = []  # none when this rank's share is empty: it still joins the all-reduce
        for g in groups:
            if not micro or sum(len(x.completions) for x in micro[-1]) + len(g.completions) > cfg.micro_batch:
                micro.append([])
            micro[-1].append(g)
        total = sum(len(g.completions) for g in groups)
        advantages = [torch.tensor([a for g in m for a in g.advantages], dtype=torch.float32) for m in micro]

        def logprobs(m: list[Group]) -> list[torch.Tensor]:
            return group_logprobs(model, [g.prompt_ids for g in m], [g.completions for g in m], cfg, self.pad_id)

        model.train()
        stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        lr = self.optimizer.param_groups[0]["lr"]  # this step's rate (the schedule moves on after the step)
        with colocate.asleep(self.sleeper):  # in-process vLLM's memory is the update's while it sleeps
            with torch.no_grad(), reference_policy(model):
                ref_lp = [logprobs(m) for m in micro]
            old_lp: list[list[torch.Tensor]] | None = None
            for _ in range(cfg.updates_per_batch):
                self.optimizer.zero_grad(set_to_none=True)
                new_old = []
                for k, m in enumerate(micro):
                    lps = logprobs(m)
                    olds = [lp.detach() for lp in lps] if old_lp is None else old_lp[k]  # first update: the sampler
                    loss, micro_stats = grpo_loss(lps, olds, ref_lp[k], advantages[k], cfg.clip_eps, cfg.kl_coef)
                    share = len(lps) / total  # the step's loss is the mean over all its sequences
                    (loss * share).backward()
                    stats["loss"] += loss.item() * share / cfg.updates_per_batch
                    for key, value in micro_stats.items():
                        stats[key] += value * share / cfg.updates_per_batch
                    new_old.append([lp.detach() for lp in lps])
                distributed.average_gradients(self.params, total)  # the global batch's mean over its sequences
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm).item()
                self.optimizer.step()
                if old_lp is None:
                    old_lp = new_old  # the sampling policy's log-probs, for the ratios of later updates
        self.schedule.step()
        stats = distributed.mean_over_ranks(stats, total)
        model.eval()
        t1 = time.perf_counter()
        # The transformers engine already holds the live weights; vLLM gets a new version.
        self.version = f"step-{step + 1}"
        if self.vllm_engine is not None:
            _push_adapter(model, self.vllm_engine, self.out / "adapters" / self.version)
        t2 = time.perf_counter()
        return {**stats, "grad_norm": grad_norm, "lr": lr, "time_update": t1 - t0, "time_sync": t2 - t1}

    def end_step(self, step: int, record: dict[str, Any]) -> None:
        """Log the step's metrics, move the bar, and save a checkpoint when due (the main rank only)."""
        from trainers.checkpoint import save_checkpoint

        if not self.world.main:
            return
        _log(self.metrics_path, self.writer, {"step": step + 1, **record})
        self.bar.update(1)
        self.bar.set_postfix(reward=f"{record['reward_mean']:.2f}", kl=f"{record['kl']:.3f}")
        if (step + 1) % self.cfg.save_every == 0 or step + 1 == self.cfg.steps:
            save_checkpoint(self.out / "checkpoint", self.model, self.optimizer, self.schedule, {"step": step + 1})

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Save the adapter and complete the summary with the run's KL figures (the main rank's summary, on
        every rank)."""
        from trainers.checkpoint import check_finite_parameters, read_metrics

        self.bar.close()
        if not self.world.main:
            summary.update(distributed.broadcast(None))
            return summary
        check_finite_parameters(self.model, f"{self.out / 'adapter'}: the final adapter after step {self.cfg.steps}")
        self.model.save_pretrained(self.out / "adapter", selected_adapters=["default"])
        records = read_metrics(self.metrics_path)
        summary["steps"] = self.cfg.steps
        summary["temperature"], summary["top_p"] = self.cfg.temperature, self.cfg.top_p  # training and eval alike
        summary["adapter"] = str(self.out / "adapter")
        summary["final_kl"] = records[-1]["kl"] if records else 0.0
        summary["max_kl"] = max((r["kl"] for r in records), default=0.0)
        summary["world_size"] = self.world.size
        if self.cfg.engine == "vllm":  # the colocated engine's memory share and whether it slept during updates
            cache = self.vllm_engine.llm.llm_engine.vllm_config.cache_config
            summary["vllm_memory"] = cache.gpu_memory_utilization
            summary["vllm_sleep"] = self.sleeper is not None
        return distributed.broadcast(summary)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.vllm_engine is not None and self.owns_vllm and hasattr(self.vllm_engine, "close"):
            self.vllm_engine.close()
        elif self.cfg.engine == "vllm" and self.vllm_engine is not None:
            self.vllm_engine.max_prompt_tokens = self.given_budget


# --- training ------------------------------------------------------------------------------------


def train_grpo(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """Run GRPO as configured; returns the summary (also in OUT/summary.json). `cfg.rollout` picks the data:
    "states" (single-turn on dialogue states, below) or "env" (on-policy dialogues, trainers.online).

    rollout_engine: with `engine="vllm"`, a ready `VLLMEngine` on the same base model to use (and leave
    open) instead of starting one; its adapter is replaced as training goes."""
    cfg.validate()  # fields may have been set after construction
    distributed.setup()  # before any model loads: under a launcher each rank's models go to its own GPU
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    distributed.on_main(
        lambda: check_same_settings(
            out, out / "config.json", asdict(cfg), ignore=NOT_COMPARED, override=cfg.resume_anyway
        )
    )
    if cfg.rollout == "env":
        from trainers.online import train_online

        return train_online(cfg, progress=progress, rollout_engine=rollout_engine)
    return _train_on_states(cfg, progress, rollout_engine)


def _train_on_states(cfg: GRPOConfig, progress: bool, rollout_engine: Any) -> dict[str, Any]:
    """Sotopia-RL's single-turn GRPO: G utterances per dialogue state, scored by the reward model."""
    from agents.engine import SamplingParams, request_seed
    from agents.llm_agent import build_messages, parse_reply

    out = Path(cfg.out)
    # Prompts: a fixed, seeded split into training and held-out states.
    if cfg.prompts:
        if not Path(cfg.prompts).is_file():
            raise FileNotFoundError(f"--prompts {cfg.prompts}: no such file")
        from rewards.sotopia_rl import read_prompts  # ours ({"prompt"}) or Sotopia-RL's GRPO JSON ({"input"})

        states = read_prompts(cfg.prompts)
    elif cfg.episodes:
        states = states_from_episodes(cfg.episodes)
    else:  # the pool size is not tied to steps, so a resumed run sees the same pool
        states = states_online(cfg.heldout_states + cfg.prompts_per_step * 64, cfg.split, cfg.seed, cfg.library)
    random.Random(cfg.seed).shuffle(states)
    heldout, train_states = states[: cfg.heldout_states], states[cfg.heldout_states :]
    if len(train_states) < cfg.prompts_per_step:
        raise ValueError(
            f"only {len(train_states)} training states; need at least prompts_per_step={cfg.prompts_per_step}"
        )

    world = distributed.world()
    if cfg.prompts_per_step < world.size:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} is smaller than the {world.size} training processes: "
            "each rank needs at least one state per step; raise --prompts-per-step or start fewer processes"
        )
    rm = load_reward_model(cfg.reward_model)  # before the policy's vLLM engine (if any) sizes its memory share
    learner = Learner(cfg, rollout_engine, progress)
    try:  # a failed run still closes what it started and gives a shared engine its budget back
        sampling = SamplingParams(
            n=cfg.group_size, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
        )

        def evaluate(tag: str) -> float:
            params_eval = SamplingParams(
                n=cfg.eval_samples, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
            )
            # Each held-out state keeps its seed across evaluations: before and after differ by the policy only.
            mine = distributed.shard(heldout)  # each rank samples and scores its share
            texts, rewards = [], []
            if mine:  # a rank may have no held-out state when there are fewer than ranks
                samples = learner.rollout.generate(
                    [build_messages({"prompt": s}) for s in mine],
                    params_eval,
                    seeds=[request_seed(cfg.seed, "eval", s) for s in mine],
                )
                texts = [parse_reply(x.text).argument for group in samples for x in group]
                rewards = rm.score([s for s in mine for _ in range(cfg.eval_samples)], texts)
            texts, rewards = _concat(distributed.gather(texts)), _concat(distributed.gather(rewards))
            mean = sum(rewards) / len(rewards)
            if distributed.is_main():
                write_json_atomic(out / f"eval_{tag}.json", {"mean_reward": mean, "samples": texts[:20]})
            return mean

        summary: dict[str, Any] = {
            "heldout_reward_before": evaluate("before")
            if learner.start_step == 0
            else read_json(out / "eval_before.json")["mean_reward"]
        }
        for step in range(learner.start_step, cfg.steps):
            # 1. Sample G utterances for each of B states. The data order depends only on (seed, step): a resumed
            #    run sees the same prompts and sampling seeds as an uninterrupted one.
            order_rng = random.Random(cfg.seed * 1_000_003 + step)
            batch_states = distributed.shard(order_rng.sample(train_states, cfg.prompts_per_step))  # this rank's share
            t0 = time.perf_counter()
            convs = [build_messages({"prompt": s}) for s in batch_states]
            learner.model.eval()
            samples = learner.rollout.generate(
                convs, sampling, seeds=[request_seed(cfg.seed, "train", step, s) for s in batch_states]
            )
            t1 = time.perf_counter()

            # 2. Score each utterance as the env would see it (the parsed reply) with the reward model.
            texts = [parse_reply(x.text).argument for g in samples for x in g]
            rewards = torch.tensor(rm.score([s for s in batch_states for _ in range(cfg.group_size)], texts))
            t2 = time.perf_counter()

            # 3. Group-relative advantages: each sample against the other samples of its state.
            advantages = group_advantages(rewards.view(len(batch_states), cfg.group_size))

            # 4. The update, on exactly the prompt ids the engine sampled from.
            groups = [
                Group(g[0].prompt_token_ids, [learner.completion_ids(x) for x in g], adv.tolist())
                for g, adv in zip(samples, advantages)
            ]
            stats = learner.update(step, groups)
            new_tokens = sum(distributed.gather(sum(len(c) for g in groups for c in g.completions)))
            rewards = torch.tensor(_concat(distributed.gather(rewards.tolist())))  # the global batch's, for the log
            learner.end_step(
                step,
                {
                    "reward_mean": rewards.mean().item(),
                    "reward_std": rewards.std().item(),
                    "trained_utterances": cfg.prompts_per_step * cfg.group_size,  # the global batch, as online logs it
                    **{k: stats[k] for k in ("kl", "clip_frac", "loss", "grad_norm", "lr")},
                    "new_tokens": new_tokens,
                    "gen_tokens_per_s": new_tokens / max(t1 - t0, 1e-9),
                    "time_generate": t1 - t0,
                    "time_score": t2 - t1,
                    "time_update": stats["time_update"],
                    "time_sync": stats["time_sync"],
                },
            )
        summary["heldout_reward_after"] = evaluate("after")
        learner.finish(summary)
        if distributed.is_main():
            write_json_atomic(out / "summary.json", summary)
        return summary
    finally:
        learner.close()


def load_reward_model(path: str) -> Any:
    """The reward model, loaded without drawing from the run's seeded random stream (its score head is
    initialised before its weights load), so the fresh LoRA built after it is the same whenever it loads."""
    from rewards.reward_model import RewardModel

    with torch.random.fork_rng(devices=[]):
        return RewardModel.load(path)


def _concat(lists: list[list[Any]]) -> list[Any]:
    return [x for part in lists for x in part]


def _push_adapter(model: Any, engine: Any, folder: Path) -> None:
    """Save the live adapter and load it into vLLM as a new version (a new LoRARequest name and id). Under
    torch.distributed the main rank writes it and every rank's engine loads it once it is on disk."""
    if distributed.is_main():
        model.save_pretrained(folder, selected_adapters=["default"])  # the trained adapter, not the frozen reference
    distributed.barrier()
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
