"""The policy GRPO trains and its one update, shared by every way of collecting data (offline states in
trainers/offline.py, `turn` and `episode` credit in the env in trainers/online.py).

One update (`Learner.update`), on groups of sampled replies with their advantages:
1. the KL reference's log-probs of the trained tokens (no gradient);
2. per pass (`updates_per_batch`): the policy's log-probs, the loss (`grpo_math.grpo_loss`), the gradients
   averaged over ranks, a stop before the optimizer step if anything is not finite, the step;
3. the adapter pushed to the rollout engine (trainers/rollout_engines.py).
What is trained of a reply is what it played (`agents.played`): each completion comes with a mask, and only its
trained tokens enter the loss, the KL and every statistic. The first pass also measures how far the trainer's
log-probs are from the sampler's on those tokens (`sampler_gap_*`) and the policy's entropy there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.engine import SamplingParams
from agents.llm_agent import REPLY_STOP
from agents.lora import lora_policy
from agents.played import TrainedReply
from sotopia_env.jsonio import append_jsonl
from trainers import colocate, distributed
from trainers.grpo_config import GRPOConfig
from trainers.grpo_math import grpo_loss, lr_factor, sampler_gap
from trainers.logprobs import grouped_logprobs, sequence_logprobs
from trainers.rollout_engines import RolloutEngines

REFERENCE = "reference"  # the peft adapter name of the frozen starting policy, when training starts from an adapter


class NonFiniteUpdate(FloatingPointError):
    """A loss or gradient that is not a finite number: the run stops before the optimizer step, so no checkpoint
    or adapter holding it is written."""


def check_finite_rewards(values: Sequence[float], source: str) -> None:
    """Stop with an error naming `source` at the first reward that is not a finite number."""
    for i, value in enumerate(values):
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{source} gave a non-finite reward ({value}) for sample {i}: check the reward model or function "
                "(or set --nonfinite-rewards drop to leave such groups out of the update, counted)"
            )


def policy_sampling(cfg: GRPOConfig, n: int, logprobs: bool = True) -> SamplingParams:
    """How the policy samples, in training (with the sampler's log-probs, for the gap the run logs) and in
    evaluation alike: n replies, each up to the end of its line, at the run's temperature and top-p."""
    return SamplingParams(
        n=n,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        logprobs=logprobs,
        stop=REPLY_STOP,
    )


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


def load_reward_model(path: str) -> Any:
    """The reward model, loaded without drawing from the run's seeded random stream (its score head is
    initialised before its weights load), so the fresh LoRA built after it is the same whenever it loads."""
    from rewards.reward_model import RewardModel

    with torch.random.fork_rng(devices=[]):
        return RewardModel.load(path)


@dataclass
class Group:
    """Sampled replies that share one advantage baseline, with their prompt and advantages.

    Offline and `turn` credit: the replies to one dialogue state (one prompt, run once by `grouped_logprobs`).
    `episode` credit: the replies of one learner turn position in a start's G episodes that were given the same
    prompt (as a rule the first turn, before the episodes part), each with its own advantage; a turn whose
    prompt no other member shares is a group of one. masks[i][t] is 1 where completion i's token t is trained
    (empty: every token); sampler_logprobs[i] the sampler's log-probs of completion i's tokens, where known."""

    prompt_ids: list[int]
    completions: list[list[int]] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    masks: list[list[int]] = field(default_factory=list)
    sampler_logprobs: list[list[float] | None] = field(default_factory=list)

    def add(self, reply: TrainedReply, advantage: float) -> None:
        self.completions.append(reply.ids)
        self.advantages.append(float(advantage))
        self.masks.append(reply.mask)
        self.sampler_logprobs.append(reply.logprobs)

    def mask(self, i: int) -> list[int]:
        return self.masks[i] if self.masks else [1] * len(self.completions[i])


def group_of(prompt_ids: list[int], replies: Sequence[TrainedReply], advantages: Sequence[float]) -> Group | None:
    """The group of a prompt's replies that have something to train (see `agents.played`), or None if none has."""
    group = Group(list(prompt_ids))
    for reply, advantage in zip(replies, advantages, strict=True):
        if not reply.untrained:
            group.add(reply, advantage)
    return group if group.completions else None


def group_logprobs(
    model: Any,
    prompt_ids: list[list[int]],
    groups: list[list[list[int]]],
    cfg: GRPOConfig,
    pad_id: int,
    with_entropy: bool = False,
) -> Any:
    """Log-probs of each group's completions given its prompt, flattened in group order: the shared-prompt way
    when the config asks and some prompt has more than one reply, else the plain way (with_entropy: and the
    entropies, as `trainers.logprobs` gives them)."""
    if cfg.shared_prompt and any(len(g) > 1 for g in groups):
        return grouped_logprobs(model, prompt_ids, groups, pad_id, cfg.temperature, with_entropy=with_entropy)
    flat_prompts = [p for p, g in zip(prompt_ids, groups) for _ in g]
    flat = [c for g in groups for c in g]
    return sequence_logprobs(model, flat_prompts, flat, pad_id, cfg.temperature, with_entropy=with_entropy)


def reply_health(replies: Sequence[TrainedReply]) -> dict[str, float]:
    """Per step: mean sampled reply length (tokens), the fractions cut at max_new_tokens, repaired by the parser,
    and left untrained because the parser's cut fell inside a token."""
    n = max(1, len(replies))
    return {
        "reply_tokens": sum(len(r.ids) for r in replies) / n,
        "cut_frac": sum(r.cut for r in replies) / n,
        "repaired_frac": sum(r.repaired for r in replies) / n,
        "untrained_frac": sum(r.untrained for r in replies) / n,
    }


def _trained(values: torch.Tensor, mask: list[int]) -> torch.Tensor:
    return values[torch.tensor(mask, dtype=torch.bool, device=values.device)]


class Learner:
    """The policy being trained and its one update: LoRA policy, KL reference, optimizer and LR schedule, the
    rollout engine kept in sync with the weights (trainers/rollout_engines.py), checkpoints with resume, metrics
    and progress bar.

    rollout_engine: with `engine="vllm"`, a ready `VLLMEngine` on the same base model to use (and leave open)
    instead of starting one; its adapter is replaced after every update."""

    def __init__(self, cfg: GRPOConfig, rollout_engine: Any = None, progress: bool = True) -> None:
        from tqdm import tqdm

        from trainers.checkpoint import resume_checkpoint, resume_metrics

        self.cfg = cfg
        self.out = Path(cfg.out)
        self.world = distributed.setup()  # a process group under torchrun / accelerate launch, else nothing
        self.model, self.tokenizer = load_policy(cfg)
        self.engines = RolloutEngines(cfg, self.model, self.tokenizer, rollout_engine)
        self.engine, self.rollout = self.engines.local, self.engines.rollout
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps)
        )
        self.start_step = resume_checkpoint(self.out / "checkpoint", self.model, self.optimizer, self.schedule) or {}
        self.start_step = self.start_step.get("step", 0)
        distributed.broadcast_parameters(self.params)  # every rank starts from the main rank's policy
        self.version = f"step-{self.start_step}"  # the adapter version now sampling
        self.engines.push(self.model, self.out / "adapters" / self.version)  # vLLM starts from the policy as it is
        self.writer = _tensorboard(self.out) if cfg.tensorboard and self.world.main else None
        self.metrics_path = self.out / "metrics.jsonl"
        if self.world.main:
            resume_metrics(self.metrics_path, self.start_step)  # steps logged after the checkpoint run again
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        show = progress and self.world.main
        self.bar = tqdm(total=cfg.steps, initial=self.start_step, desc="grpo", unit="step", disable=not show)

    def _logprobs(self, m: list[Group], entropy: bool = False) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        out = group_logprobs(
            self.model, [g.prompt_ids for g in m], [g.completions for g in m], self.cfg, self.pad_id, entropy
        )
        return out if entropy else (out, [])

    def update(self, step: int, groups: list[Group]) -> dict[str, float]:
        """One GRPO update on these groups (the module docstring), then the adapter sync. Returns loss, kl,
        clip_frac, grad_norm, lr, the sampler gap and entropy on trained tokens, and the update's and the sync's
        seconds. Micro-batches hold whole groups, so a shared prompt runs once per micro-batch.

        Under torch.distributed each rank passes its share of the step's groups: the gradients and statistics
        are averaged over ranks weighted by their loss terms, so the step is the one on the global batch."""
        cfg, model = self.cfg, self.model
        t0 = time.perf_counter()
        micro: list[list[Group]] = []  # none when this rank's share is empty: it still joins the all-reduce
        for g in groups:
            if not micro or sum(len(x.completions) for x in micro[-1]) + len(g.completions) > cfg.micro_batch:
                micro.append([])
            micro[-1].append(g)
        masks = [[g.mask(i) for g in m for i in range(len(g.completions))] for m in micro]
        advantages = [torch.tensor([a for g in m for a in g.advantages], dtype=torch.float32) for m in micro]
        sampled = [[s for g in m for s in (g.sampler_logprobs or [None] * len(g.completions))] for m in micro]
        sequences = sum(len(g.completions) for g in groups)
        tokens = sum(sum(mask) for ms in masks for mask in ms)
        weight = tokens if cfg.loss_type == "dapo" else sequences  # what this rank's loss averages over

        if sum(distributed.gather(sequences)) == 0:  # every reply untrained or dropped, on every rank: no update
            lr = self.optimizer.param_groups[0]["lr"]
            self.schedule.step()
            self.version = f"step-{step + 1}"
            self.engines.push(model, self.out / "adapters" / self.version)
            zero = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "entropy": 0.0, "grad_norm": 0.0}
            return {**zero, "lr": lr, "time_update": 0.0, "time_sync": 0.0}

        def trained(lps: list[torch.Tensor], k: int) -> list[torch.Tensor]:
            return [_trained(lp, mask) for lp, mask in zip(lps, masks[k])]

        model.train()
        stats = {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0}
        health: dict[str, list[torch.Tensor]] = {"trainer": [], "sampler": [], "entropy": []}
        lr = self.optimizer.param_groups[0]["lr"]  # this step's rate (the schedule moves on after the step)
        grad_norm = 0.0
        with colocate.asleep(self.engines.sleeper):  # in-process vLLM's memory is the update's while it sleeps
            with torch.no_grad(), reference_policy(model):
                ref_lp = [trained(self._logprobs(m)[0], k) for k, m in enumerate(micro)]
            old_lp: list[list[torch.Tensor]] | None = None
            is_weights: list[list[torch.Tensor] | None] = [None] * len(micro)
            for _ in range(cfg.updates_per_batch):
                self.optimizer.zero_grad(set_to_none=True)
                new_old = []
                for k, m in enumerate(micro):
                    lps, entropies = self._logprobs(m, entropy=old_lp is None)
                    lps = trained(lps, k)
                    if old_lp is None:  # the first pass: the policy that sampled, as the trainer computes it
                        olds = [lp.detach() for lp in lps]
                        is_weights[k] = self._observe(olds, sampled[k], masks[k], trained(entropies, k), health)
                    else:
                        olds = old_lp[k]
                    loss, micro_stats = grpo_loss(
                        lps,
                        olds,
                        ref_lp[k],
                        advantages[k],
                        cfg.clip_eps,
                        cfg.kl_coef,
                        cfg.loss_type,
                        sequences=sequences,
                        tokens=tokens,
                        max_new_tokens=cfg.max_new_tokens,
                        is_weights=is_weights[k],
                    )
                    if not torch.isfinite(loss):
                        raise NonFiniteUpdate(
                            f"step {step + 1}: the GRPO loss is {loss.item()} (micro-batch {k + 1} of {len(micro)}); "
                            "nothing was updated or saved. Check the rewards and the log-probs (lower --lr, or "
                            "--temperature closer to 1)"
                        )
                    loss.backward()
                    share = len(lps) / sequences  # the statistics are means over the step's sequences
                    stats["loss"] += loss.item() / cfg.updates_per_batch
                    for key, value in micro_stats.items():
                        stats[key] += value * share / cfg.updates_per_batch
                    new_old.append([lp.detach() for lp in lps])
                distributed.average_gradients(self.params, weight)  # the global batch's mean over its loss terms
                grad_norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm).item()
                if not math.isfinite(grad_norm):
                    raise NonFiniteUpdate(
                        f"step {step + 1}: the gradient norm is {grad_norm}; the optimizer step was skipped and "
                        "nothing was saved. Check the rewards and lower --lr"
                    )
                self.optimizer.step()
                if old_lp is None:
                    old_lp = new_old  # the sampling policy's log-probs, for the ratios of later passes
        self.schedule.step()
        loss = distributed.mean_over_ranks({"loss": stats.pop("loss")}, weight)
        stats = {**distributed.mean_over_ranks(stats, sequences), **loss, **_health(health)}
        model.eval()
        t1 = time.perf_counter()
        self.version = f"step-{step + 1}"
        self.engines.push(model, self.out / "adapters" / self.version)  # the live model already has the weights
        t2 = time.perf_counter()
        return {**stats, "grad_norm": grad_norm, "lr": lr, "time_update": t1 - t0, "time_sync": t2 - t1}

    def _observe(
        self,
        trainer: list[torch.Tensor],
        sampler: list[list[float] | None],
        masks: list[list[int]],
        entropies: list[torch.Tensor],
        health: dict[str, list[torch.Tensor]],
    ) -> list[torch.Tensor] | None:
        """Keep the first pass's log-probs beside the sampler's and the entropies, for the step's health; return
        the truncated importance weights min(exp(trainer - sampler), cap) when `tis_cap` is set."""
        health["entropy"] += [e.detach() for e in entropies]
        weights = []
        for lp, s, mask in zip(trainer, sampler, masks):
            if s is None:
                weights.append(torch.ones_like(lp))
                continue
            s_lp = _trained(torch.tensor(s, dtype=torch.float32, device=lp.device), mask)
            health["trainer"].append(lp.detach())
            health["sampler"].append(s_lp)
            weights.append(torch.exp(lp.detach() - s_lp).clamp(max=self.cfg.tis_cap or math.inf))
        return weights if self.cfg.tis_cap else None

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
        summary.update(self.engines.summary())
        return distributed.broadcast(summary)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.engines.close()


def _health(health: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """The step's entropy and sampler gap on trained tokens, over every rank's tokens."""
    entropy = torch.cat(health["entropy"]).double() if health["entropy"] else torch.zeros(0, dtype=torch.float64)
    trainer = torch.cat(health["trainer"]).double() if health["trainer"] else torch.zeros(0, dtype=torch.float64)
    sampler = torch.cat(health["sampler"]).double() if health["sampler"] else torch.zeros(0, dtype=torch.float64)
    parts = distributed.gather((entropy, trainer, sampler))
    entropy, trainer, sampler = (torch.cat([p[i] for p in parts]) for i in range(3))
    out = {"entropy": entropy.mean().item() if len(entropy) else 0.0}
    if len(trainer):
        out.update(sampler_gap(trainer, sampler))
    return out


def _log(path: Path, writer: Any, record: dict[str, Any]) -> None:
    append_jsonl(path, record)
    if writer is not None:
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                writer.add_scalar(f"grpo/{key}", value, record["step"])


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
