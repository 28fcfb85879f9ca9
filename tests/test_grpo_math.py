"""GRPO's math as pure functions (advantages, loss, LR schedule) against numbers worked by hand, and the
trainer configs refusing bad values before any model loads. No model: these run in well under a second."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.cli import main
from trainers.bc import BCConfig, train_bc
from trainers.grpo import GRPOConfig, train_grpo
from trainers.grpo_math import (
    group_advantages,
    grpo_loss,
    lr_factor,
    ragged_advantages,
    sampler_gap,
    zero_std_fraction,
)

LN = math.log


def test_group_advantages_compare_each_sample_with_its_own_group():
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [5.0, 5.0, 5.0, 5.0], [0.0, 10.0, 0.0, 10.0]])
    # Row 0: mean 3, deviations -2 -1 0 3, unbiased variance (4 + 1 + 0 + 9) / 3 = 14 / 3, std 2.1602469.
    # Row 1: no spread, so no preference (0, not 0 / 0). Row 2: mean 5, std sqrt(100 / 3) = 5.7735027.
    s0, s2 = math.sqrt(14 / 3) + 1e-4, math.sqrt(100 / 3) + 1e-4
    expected = torch.tensor([[-2 / s0, -1 / s0, 0.0, 3 / s0], [0.0] * 4, [-5 / s2, 5 / s2, -5 / s2, 5 / s2]])
    torch.testing.assert_close(group_advantages(rewards), expected)
    # With the 1e-4: -2 / 2.1603469 = -0.9257773, and so on.
    assert group_advantages(rewards)[0].tolist() == pytest.approx([-0.9257773, -0.4628887, 0.0, 1.3886660], abs=1e-6)


def test_grpo_loss_clips_per_token_for_both_signs_of_advantage_and_adds_the_k3_kl():
    """Two sequences, eps 0.2, kl_coef 0.1, worked by hand.

    Sequence 1, A = +1, ratios 1.5 and 0.9: the surrogate takes min(1.5, 1.2) = 1.2 (clipped) and 0.9.
    ref - lp = 0 and ln 2, so k3 = e^d - d - 1 = 0 and 1 - ln 2 = 0.3068528.
    Token losses -(1.2 - 0) = -1.2 and -(0.9 - 0.0306853) = -0.8693147; mean -1.0346574.
    Sequence 2, A = -2, ratios 0.5, 1.1, 1.3: r A = -1, -2.2, -2.6 and clip(r) A = -1.6, -2.2, -2.4, so the
    min is -1.6 (clipped), -2.2, -2.6 (not clipped: the pessimistic side). ref - lp = ln 0.5, 0, 0: k3 =
    0.5 + ln 2 - 1 = 0.1931472, 0, 0. Token losses 1.6193147, 2.2, 2.6; mean 2.1397716.
    Loss = (-1.0346574 + 2.1397716) / 2 = 0.5525571. KL stat = (0.3068528 / 2 + 0.1931472 / 3) / 2 = 0.1089044.
    Clip fraction = (1/2 + 2/3) / 2 = 0.5833333.
    Gradients d loss / d lp (loss = mean over sequences of token means): a clipped token's surrogate has none;
    d k3 / d lp = 1 - e^d. Seq 1: 0 (clipped, d = 0), -(0.9 - 0.1 * (1 - 2)) / 4 = -0.25. Seq 2: -(0 - 0.1 * 0.5) / 6 =
    0.0083333, -(1.1 * -2) / 6 = 0.3666667, -(1.3 * -2) / 6 = 0.4333333."""
    old = [torch.tensor([-1.0, -2.0]), torch.tensor([-0.5, -1.5, -3.0])]
    ratios = [[1.5, 0.9], [0.5, 1.1, 1.3]]
    lps = [(o + torch.tensor([LN(r) for r in rs])).requires_grad_() for o, rs in zip(old, ratios)]
    refs = [lps[0].detach() + torch.tensor([0.0, LN(2)]), lps[1].detach() + torch.tensor([LN(0.5), 0.0, 0.0])]
    loss, stats = grpo_loss(lps, old, refs, torch.tensor([1.0, -2.0]), clip_eps=0.2, kl_coef=0.1)
    assert loss.item() == pytest.approx(0.5525571, abs=1e-6)
    assert stats["kl"] == pytest.approx(0.1089044, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(0.5833333, abs=1e-6)
    loss.backward()
    assert lps[0].grad.tolist() == pytest.approx([0.0, -0.25], abs=1e-6)
    assert lps[1].grad.tolist() == pytest.approx([0.0083333, 0.3666667, 0.4333333], abs=1e-6)


def test_grpo_loss_reports_the_kl_unclamped():
    """The k3 KL is >= 0 in exact arithmetic; the statistic is reported as computed, not floored at 0, so a
    bug giving a negative KL shows. Here the reference equals the policy: KL 0, and a ratio of 1 clips nothing."""
    lp = [torch.tensor([-1.0, -2.0, -0.3])]
    loss, stats = grpo_loss(lp, lp, lp, torch.tensor([0.5]), clip_eps=0.2, kl_coef=1.0)
    assert stats == {"kl": 0.0, "clip_frac": 0.0}
    assert loss.item() == pytest.approx(-0.5)  # -(ratio 1 x A 0.5) per token
    # A reference less likely than the policy on every token: k3 at d = ln 4 is 4 - ln 4 - 1 = 1.6137056.
    _, stats = grpo_loss(lp, lp, [x + LN(4) for x in lp], torch.tensor([0.0]), clip_eps=0.2, kl_coef=1.0)
    assert stats["kl"] == pytest.approx(3 - LN(4), abs=1e-5)


def test_scale_rewards_group_batch_and_none_divide_by_the_group_the_step_or_nothing():
    """Rows [1, 2, 3, 6] and [0, 10, 0, 10]: means 3 and 5, so the centred rewards are -2 -1 0 3 and -5 5 -5 5.
    group: each row by its own std (2.1602469, 5.7735027), as above. batch: both rows by the std of all eight
    rewards, mean 32 / 8 = 4, squares 9 4 1 4 16 36 16 36 = 122, variance 122 / 7, std 4.1748022. none: centred."""
    rewards = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 10.0, 0.0, 10.0]])
    centred = torch.tensor([[-2.0, -1.0, 0.0, 3.0], [-5.0, 5.0, -5.0, 5.0]])
    torch.testing.assert_close(group_advantages(rewards, "none"), centred)
    torch.testing.assert_close(group_advantages(rewards, "batch"), centred / (math.sqrt(122 / 7) + 1e-4))
    # The step's std may come from elsewhere (other ranks, other groups): then it is that one.
    torch.testing.assert_close(group_advantages(rewards, "batch", batch_std=2.0), centred / (2.0 + 1e-4))
    assert group_advantages(rewards, "group")[1].tolist() == pytest.approx([-0.8660104, 0.8660104] * 2, abs=1e-6)
    # Groups of any size: a group of one has no baseline; batch scaling takes the std over every group's rewards.
    ragged = ragged_advantages([[1.0, 3.0], [7.0], [2.0, 2.0, 5.0]], "batch")
    std = torch.tensor([1.0, 3.0, 7.0, 2.0, 2.0, 5.0]).std().item() + 1e-4  # 2.3166067
    assert ragged == [pytest.approx([-1 / std, 1 / std]), [0.0], pytest.approx([-1 / std, -1 / std, 2 / std])]
    with pytest.raises(ValueError, match="scale must be one of group, batch, none"):
        group_advantages(rewards, "rank")


def test_the_loss_types_weigh_sequences_tokens_or_a_constant():
    """Two sequences with ratio 1 and no KL, so each token's loss is -A: sequence 1 (A = 1) has 1 token, sequence
    2 (A = -1) has 3. grpo: the mean of the sequences' token means, (-1 + 1) / 2 = 0. dapo: every token alike,
    (-1 + 3) / 4 = 0.5. dr_grpo with max_new_tokens 8: (-1 + 3) / (2 x 8) = 0.125. A step split into two
    micro-batches, each told the step's counts, sums to the whole step's loss in every type."""
    lps = [torch.tensor([-1.0]), torch.tensor([-1.0, -2.0, -0.5])]
    adv = torch.tensor([1.0, -1.0])
    expected = {"grpo": 0.0, "dapo": 0.5, "dr_grpo": 0.125}
    for loss_type, value in expected.items():
        loss, _ = grpo_loss(lps, lps, lps, adv, 0.2, 0.0, loss_type, max_new_tokens=8)
        assert loss.item() == pytest.approx(value), loss_type
        parts = [
            grpo_loss([lp], [lp], [lp], a[None], 0.2, 0.0, loss_type, sequences=2, tokens=4, max_new_tokens=8)[0]
            for lp, a in zip(lps, adv)
        ]
        assert sum(p.item() for p in parts) == pytest.approx(value), loss_type


def test_importance_weights_scale_each_tokens_surrogate():
    """Truncated importance sampling: a token weighted 2 counts twice in the surrogate, not in the KL. One sequence,
    ratio 1, A = 1, two tokens weighted 2 and 0.5: token losses -2 and -0.5, mean -1.25."""
    lp = [torch.tensor([-1.0, -2.0])]
    loss, _ = grpo_loss(lp, lp, lp, torch.tensor([1.0]), 0.2, 0.1, is_weights=[torch.tensor([2.0, 0.5])])
    assert loss.item() == pytest.approx(-1.25)


def test_the_sampler_gap_is_the_log_ratio_and_its_k3_kl():
    """Trainer log-probs -1, -2 against the sampler's -1.5, -1: log r = 0.5, -1. Mean |log r| 0.75, max 1; k3 =
    mean(e^x - 1 - x) = ((1.6487213 - 1.5) + (0.3678794 - 0)) / 2 = 0.2583003."""
    gap = sampler_gap(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0]))
    assert gap == pytest.approx({"sampler_gap_mean": 0.75, "sampler_gap_max": 1.0, "sampler_kl": 0.2583003}, abs=1e-6)
    assert zero_std_fraction([[1.0, 1.0], [1.0, 2.0], [3.0], [0.5, 0.5, 0.5]]) == pytest.approx(2 / 3)


def test_the_learning_rate_warms_up_to_its_peak_and_then_decays():
    # warm-up 2 of 6 steps: (s + 1) / 3 for s = 0, 1; peak at s = 2; then 0.5 (1 + cos(pi (s - 2) / 4)).
    factors = [lr_factor(s, 2, 6) for s in range(6)]
    assert factors == pytest.approx([1 / 3, 2 / 3, 1.0, 0.8535534, 0.5, 0.1464466], abs=1e-6)
    assert max(factors) == factors[2] == 1.0
    assert all(a > b for a, b in zip(factors[2:], factors[3:]))  # decays after the peak
    assert lr_factor(0, 0, 4) == 1.0 and lr_factor(5, 0, 4) == 0.0  # no warm-up: the peak first; 0 past the end


BAD_GRPO = [
    ("group_size", 1),
    ("steps", 0),
    ("prompts_per_step", 0),
    ("temperature", 0.0),
    ("top_p", 0.0),
    ("top_p", 1.5),
    ("clip_eps", 0.0),
    ("kl_coef", -0.1),
    ("lr", 0.0),
    ("micro_batch", 0),
    ("eval_samples", 0),
    ("heldout_states", 0),
    ("warmup_steps", -1),
    ("updates_per_batch", 0),
    ("max_new_tokens", 0),
    ("lora_layers", 0),
    ("engine", "vlm"),
    ("rollout_mode", "fast"),
    ("scale_rewards", "rank"),
    ("loss_type", "bnpo"),
    ("tis_cap", 0.5),
    ("nonfinite_rewards", "ignore"),
    ("weight_decay", -0.01),
]


@pytest.mark.parametrize(("field", "value"), BAD_GRPO)
def test_a_bad_grpo_config_is_refused_naming_the_field_the_value_and_the_flag(field, value):
    flag = "--" + field.replace("_", "-")
    with pytest.raises(ValueError, match=f"GRPOConfig.{field} = {value!r}: .*set {flag}"):
        GRPOConfig(**{field: value})


def test_grpo_refuses_a_config_changed_after_construction_before_touching_anything(tmp_path):
    cfg = GRPOConfig(out=str(tmp_path / "grpo"), reward_model=str(tmp_path / "no-rm"))
    cfg.group_size = 1
    with pytest.raises(ValueError, match="group_size = 1: must be at least 2"):
        train_grpo(cfg, progress=False)
    assert not (tmp_path / "grpo").exists()  # refused before the run folder, the states or a model
    with pytest.raises(ValueError, match="prompts = 'p.jsonl': --prompts and --episodes"):
        GRPOConfig(prompts="p.jsonl", episodes="e.jsonl")


BAD_BC = [
    ({"epochs": 0}, "epochs = 0"),
    ({"batch_size": 0}, "batch_size = 0"),
    ({"lr": -1.0}, "lr = -1.0"),
    ({"top_fraction": 0.0}, "top_fraction = 0.0"),
    ({"top_fraction": 1.2}, "top_fraction = 1.2"),
    ({"agents": "agent_2"}, "agents = 'agent_2'"),
    ({"agents": "agent_0", "top_fraction": 0.2}, "agents = 'agent_0'"),
    ({"max_length": 1}, "max_length = 1"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_BC)
def test_a_bad_bc_config_is_refused_naming_the_field_and_the_value(fields, message, tmp_path):
    with pytest.raises(ValueError, match=f"BCConfig.{message}: "):
        BCConfig(**fields)
    cfg = BCConfig(out=str(tmp_path / "bc"))
    for name, value in fields.items():
        setattr(cfg, name, value)
    with pytest.raises(ValueError, match=f"BCConfig.{message}: "):
        train_bc(cfg, progress=False)
    assert not (tmp_path / "bc").exists()


def test_the_cli_reports_a_bad_flag_in_one_line_without_loading_a_model(capsys):
    assert main(["grpo", "--group-size", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sotopia-env grpo: error: GRPOConfig.group_size = 1: must be at least 2") and "\n" not in err
    assert main(["bc", "--agents", "both"]) == 2
    assert "BCConfig.agents = 'both': must be all, agent_0 or agent_1 (set --agents)" in capsys.readouterr().err
