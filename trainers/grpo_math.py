"""GRPO's math as small pure functions: advantages, the loss and its aggregation, the learning-rate schedule, the
returns of episode credit. The training loops (trainers/offline.py, trainers/online.py) and the one update
(trainers/learner.py) call them; tests check each on numbers worked by hand.

Names follow TRL's GRPOConfig where TRL has the option:
- `scale_rewards`: how a reward becomes an advantage. With r the rewards of one group (the G samples of a state),
  "group": A = (r - mean(r)) / (std(r) + eps), today's GRPO; "batch": A = (r - mean(r)) / (std(R) + eps) with
  R every reward of the step; "none": A = r - mean(r) (Dr. GRPO: no division, so a group whose rewards barely
  differ is not blown up).
- `loss_type`: how per-token losses l_it (sequence i, token t, trained tokens only) become the step's loss.
  "grpo": (1/N) sum_i (1/T_i) sum_t l_it, each sequence weighs the same whatever its length; "dapo":
  (1/T) sum_i sum_t l_it, T the step's trained tokens, each token weighs the same; "dr_grpo":
  (1/(N L)) sum_i sum_t l_it, L = max_new_tokens, a constant, so neither length nor batch composition rescales it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from trainers.grpo_config import LOSS_TYPES, SCALES

STD_EPS = 1e-4  # keeps a group whose samples all scored the same at advantage 0 instead of 0 / 0
# A group whose rewards' standard deviation is below this teaches nothing (every advantage is about 0); the
# run logs the fraction of such groups (`zero_std_groups`), the first sign that the reward has no spread.
ZERO_STD = 1e-6


def group_advantages(rewards: torch.Tensor, scale: str = "group", batch_std: float | None = None) -> torch.Tensor:
    """[B, G] rewards (G samples of each of B states) -> [B, G] advantages: each sample's reward less its own
    group's mean, divided per `scale` (module docstring) by the group's (unbiased) standard deviation, by the
    step's (`batch_std`; default: the std of `rewards`), or not at all."""
    centred = rewards - rewards.mean(1, keepdim=True)
    if scale == "none":
        return centred
    if scale == "batch":
        std = rewards.std() if batch_std is None else torch.tensor(batch_std, dtype=rewards.dtype)
        return centred / (std + STD_EPS)
    if scale == "group":
        return centred / (rewards.std(1, keepdim=True) + STD_EPS)
    raise ValueError(f"scale must be one of {', '.join(SCALES)}, not {scale!r}")


def ragged_advantages(groups: Sequence[Sequence[float]], scale: str = "group", batch_std: float | None = None) -> list:
    """`group_advantages` for groups of any sizes (a learner turn's candidates, the episodes that reached a turn
    position). A group of one has no baseline: advantage 0. batch_std: the step's (default: over `groups`)."""
    if scale == "batch" and batch_std is None:
        batch_std = reward_std([x for g in groups for x in g])
    out = []
    for g in groups:
        if len(g) < 2:
            out.append([0.0] * len(g))
        else:
            out.append(group_advantages(torch.tensor([list(g)], dtype=torch.float64), scale, batch_std)[0].tolist())
    return out


def reward_std(values: Sequence[float]) -> float:
    """The unbiased standard deviation of a step's rewards (0 for fewer than two)."""
    return torch.tensor(list(values), dtype=torch.float64).std().item() if len(values) > 1 else 0.0


def zero_std_fraction(groups: Sequence[Sequence[float]]) -> float:
    """The fraction of groups (of two or more) whose rewards do not differ (std below `ZERO_STD`)."""
    sized = [g for g in groups if len(g) > 1]
    return sum(reward_std(g) < ZERO_STD for g in sized) / len(sized) if sized else 0.0


def grpo_loss(
    logprobs: list[torch.Tensor],
    old_logprobs: list[torch.Tensor],
    ref_logprobs: list[torch.Tensor],
    advantages: torch.Tensor,
    clip_eps: float,
    kl_coef: float,
    loss_type: str = "grpo",
    sequences: int | None = None,
    tokens: int | None = None,
    max_new_tokens: int | None = None,
    is_weights: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The GRPO objective over N sampled sequences, as a loss to minimise; returns (loss, stats).

    logprobs: N tensors [T_i], each sequence's trained tokens under the policy being trained (carrying
    gradients); old_logprobs: the same under the policy that sampled them; ref_logprobs: under the KL reference.
    advantages: [N], one per sequence, shared by its tokens. Per token: ratio r = exp(lp - old), surrogate
    min(r A, clip(r, 1 - eps, 1 + eps) A), times the token's importance weight where given (truncated importance
    sampling: the trainer's old policy over the sampler's, capped), and the k3 estimate of KL(policy ||
    reference), exp(ref - lp) - (ref - lp) - 1; the token's loss l = -(surrogate - kl_coef * kl).

    The loss aggregates l per `loss_type` (module docstring) over a step of `sequences` sequences and `tokens`
    trained tokens (defaults: these N and their tokens), L = `max_new_tokens` (default: the longest here), so a
    step split into micro-batches sums their losses. stats (means over these sequences of per-sequence token
    means): kl as computed, not clamped (>= 0 up to rounding), and clip_frac, the fraction of tokens whose ratio
    left [1 - eps, 1 + eps]."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}, not {loss_type!r}")
    sequences = len(logprobs) if sequences is None else sequences
    tokens = sum(len(lp) for lp in logprobs) if tokens is None else tokens
    max_new_tokens = max((len(lp) for lp in logprobs), default=1) if max_new_tokens is None else max_new_tokens
    weights = is_weights if is_weights is not None else [None] * len(logprobs)
    terms, kls, clipped = [], [], []
    for lp, old, ref, adv, w in zip(logprobs, old_logprobs, ref_logprobs, advantages, weights, strict=True):
        ratio = torch.exp(lp - old)
        surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
        if w is not None:
            surrogate = surrogate * w
        delta = ref - lp
        kl = torch.expm1(delta) - delta
        token_loss = -(surrogate - kl_coef * kl)
        if loss_type == "grpo":
            terms.append(token_loss.mean() / sequences)
        elif loss_type == "dapo":
            terms.append(token_loss.sum() / tokens)
        else:
            terms.append(token_loss.sum() / (sequences * max_new_tokens))
        kls.append(kl.mean().detach())
        clipped.append(((ratio - 1).abs() > clip_eps).float().mean())
    stats = {"kl": torch.stack(kls).mean().item(), "clip_frac": torch.stack(clipped).mean().item()}
    return torch.stack(terms).sum(), stats


def sampler_gap(trainer: torch.Tensor, sampler: torch.Tensor) -> dict[str, float]:
    """How far the trainer's log-probs of sampled tokens are from the sampler's (both [T], the trained tokens of
    a step): mean and max |trainer - sampler|, and the k3 estimate of KL(sampler || trainer) from the sampler's
    own samples, E[(r - 1) - log r] with r = exp(trainer - sampler) (verl logs the same as rollout_probs_diff).
    Near 0 when the sampler is the policy the loss assumes; a sampler with a penalty or a top-k of its own shows."""
    if not len(trainer):
        return {"sampler_gap_mean": 0.0, "sampler_gap_max": 0.0, "sampler_kl": 0.0}
    log_r = trainer.double() - sampler.double()
    return {
        "sampler_gap_mean": log_r.abs().mean().item(),
        "sampler_gap_max": log_r.abs().max().item(),
        "sampler_kl": (torch.expm1(log_r) - log_r).mean().item(),
    }


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """The learning rate of update `step` (0-based) as a fraction of the configured peak: a linear warm-up
    that reaches the peak at step `warmup_steps`, then a cosine decay towards 0 at `total_steps` (the last
    update, total_steps - 1, still moves the policy)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def returns_to_go(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_k = sum_{j >= k} gamma^(j - k) r_j: each turn's reward plus the discounted rewards of the same
    learner's later turns."""
    out, ret = [], 0.0
    for r in reversed(rewards):
        ret = r + gamma * ret
        out.append(ret)
    return out[::-1]


def position_advantages(
    returns: Sequence[Sequence[float]], scale: str = "group", batch_std: float | None = None
) -> list[list[float]]:
    """Episode credit's advantages: returns[m][k] is the return-to-go of the learner's k-th turn in episode m
    of a group. Each turn position is a group of the episodes that reached it (`ragged_advantages`); a position
    only one episode reached has no baseline and gets 0."""
    out = [[0.0] * len(r) for r in returns]
    positions = []
    for k in range(max(map(len, returns), default=0)):
        members = [m for m, r in enumerate(returns) if len(r) > k]
        positions.append((k, members, [returns[m][k] for m in members]))
    advantages = ragged_advantages([values for _, _, values in positions], scale, batch_std)
    for (k, members, _), adv in zip(positions, advantages):
        for m, a in zip(members, adv):
            out[m][k] = a
    return out
