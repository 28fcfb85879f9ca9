"""Behaviour cloning from episodes, and Sotopia-π's self-reinforcement (filtered behaviour cloning).

    sotopia-env bc --episodes runs/expert.jsonl --out runs/bc
    sotopia-env bc --episodes runs/self_play.jsonl --top-fraction 0.2 --out runs/sr     (self-reinforcement)

Each example is one turn of a kept agent: the chat the policy saw (the replayed observation) and, as the
assistant reply, what the agent did, written the way `LLMAgent` expects to read it (plain text for speech,
JSON for other actions). The loss covers the reply tokens only. Self-reinforcement keeps, per scenario,
the top `top_fraction` of (episode, agent) pairs by the judge's goal score, then trains the same way.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from agents.llm_agent import build_messages
from agents.lora import lora_policy
from agents.render import render_chat
from sotopia_env import Episode, read_episodes
from sotopia_env.actions import ActionType
from sotopia_env.jsonio import append_jsonl, write_json_atomic
from sotopia_env.provenance import check_same_settings
from sotopia_env.replay import utterance_states
from trainers import distributed
from trainers.bc_config import NOT_COMPARED, BCConfig  # noqa: F401 - re-exported: the trainer's config
from trainers.logprobs import sequence_logprobs


def played_by(episode: Episode, agent: str, models: Sequence[str]) -> bool:
    """Whether the seat was played by one of `models` (its `agent_models` entry); any model when none given."""
    return not models or episode.agent_models.get(agent) in models


def select_top(episodes: Sequence[Episode], fraction: float, models: Sequence[str] = ()) -> list[tuple[Episode, str]]:
    """Per scenario, the (episode, agent) pairs whose judge goal score is in the top `fraction` (at least one),
    among the seats played by `models` (all seats when none are given)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], not {fraction}")
    by_scenario: dict[str, list[tuple[float, Episode, str]]] = {}
    for ep in episodes:
        for agent in ep.agents:
            if not played_by(ep, agent, models):
                continue
            goal = ep.judge_scores.get(agent, {}).get("goal")
            if goal is not None:
                by_scenario.setdefault(ep.scenario.id, []).append((goal, ep, agent))
    if not by_scenario:
        raise ValueError("no episode has judge goal scores; judge them first (sotopia-env judge)")
    kept = []
    for pairs in by_scenario.values():
        pairs.sort(key=lambda x: (-x[0], x[1].id, x[2]))
        kept += [(ep, agent) for _, ep, agent in pairs[: max(1, math.ceil(fraction * len(pairs)))]]
    return kept


def reply_text(action_type: str, argument: str) -> str:
    """What the agent's model should have written for this action (LLMAgent's reply format)."""
    kind = ActionType.parse(action_type)
    if kind is ActionType.speak:
        return argument
    return json.dumps({"action_type": kind.sotopia_name, "argument": argument})


def examples(pairs: Sequence[tuple[Episode, str]]) -> list[tuple[list[dict[str, str]], str]]:
    out = []
    for ep, agent in pairs:
        for state in utterance_states(ep):
            if state.agent == agent:
                out.append(
                    (
                        build_messages({"prompt": state.prompt}),
                        reply_text(state.action.action_type.sotopia_name, state.action.argument),
                    )
                )
    return out


def tokenize_example(
    tokenizer: Any, messages: list[dict[str, str]], reply: str, max_length: int
) -> tuple[list[int], list[int]]:
    """(prompt ids, reply ids), together fitted to max_length by `agents.render` (the oldest dialogue lines are
    left out; a reply longer than half the budget is cut at its end). Only the reply and its end token are
    learned."""
    rendered = render_chat(tokenizer, messages, max_length, reply=reply, reply_budget=max_length // 2)
    ids, n = rendered.ids, rendered.prompt_length
    # The reply and the end token the policy would stop at, not what the template writes after it (a line break):
    # the policy never generates past its end token, so it is trained on exactly what it plays.
    end = next((k for k, t in enumerate(ids[n:]) if t == tokenizer.eos_token_id), None)
    return ids[:n], ids[n:] if end is None else ids[n : n + end + 1]


def train_bc(cfg: BCConfig, progress: bool = True) -> dict[str, Any]:
    from tqdm import tqdm

    from trainers.checkpoint import check_finite_parameters, resume_checkpoint, resume_metrics, save_checkpoint

    cfg.validate()  # fields may have been set after construction
    world = distributed.setup()  # a process group under torchrun / accelerate launch, else nothing
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = asdict(cfg)
    distributed.on_main(
        lambda: check_same_settings(out, out / "config.json", settings, ignore=NOT_COMPARED, override=cfg.resume_anyway)
    )
    episodes = read_episodes(cfg.episodes)
    if cfg.top_fraction is not None:
        pairs = select_top(episodes, cfg.top_fraction, cfg.models)
    else:
        seats = ("agent_0", "agent_1") if cfg.agents == "all" else (cfg.agents,)
        pairs = [(ep, a) for ep in episodes for a in ep.agents if a in seats and played_by(ep, a, cfg.models)]
    data = examples(pairs)
    if not data:
        played = sorted({m for ep in episodes for m in ep.agent_models.values()})
        raise ValueError(
            f"{cfg.episodes}: no turns to learn from (--models {cfg.models}; models in the file: {played})"
        )
    model, tokenizer = lora_policy(cfg.base, rank=cfg.lora_r, alpha=cfg.lora_alpha, top_layers=cfg.lora_layers)
    encoded = [tokenize_example(tokenizer, m, r, cfg.max_length) for m, r in data]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    steps_per_epoch = math.ceil(len(encoded) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / max(1, total)))
    step = (resume_checkpoint(out / "checkpoint", model, optimizer, schedule) or {"step": 0})["step"]
    distributed.broadcast_parameters(params)  # every rank starts from the main rank's adapter
    if world.main:
        resume_metrics(out / "metrics.jsonl", step)  # steps logged after the checkpoint are trained and logged again
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    bar = tqdm(total=total, initial=step, desc="bc", unit="step", disable=not (progress and world.main))
    model.train()
    last_loss: float | None = None  # None when this run had no step left to train (it resumed a finished run)
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        order = list(range(len(encoded)))
        random.Random(cfg.seed + epoch).shuffle(order)  # same order after a resume
        batch = [encoded[i] for i in order[within * cfg.batch_size : (within + 1) * cfg.batch_size]]
        batch = distributed.shard(batch)  # this rank's share of the global batch (all of it in one process)
        # The loss is the mean negative log-likelihood over the batch's reply tokens (GRPO's log-prob pass: the
        # LM head runs on the replies' positions only); ranks weigh their means by their token counts so the
        # step is the global batch's.
        tokens, loss_value = 0, 0.0
        if batch:  # the last batch of an epoch may leave a rank without examples
            logprobs = sequence_logprobs(model, [p for p, _ in batch], [r for _, r in batch], pad)
            loss = -torch.cat(logprobs).mean()
            loss.backward()
            tokens, loss_value = sum(len(r) for _, r in batch), loss.item()
        distributed.average_gradients(params, tokens)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last_loss = distributed.mean_over_ranks({"loss": loss_value}, tokens)["loss"]
        bar.update(1)
        bar.set_postfix(loss=f"{last_loss:.3f}")
        if not world.main:
            continue
        append_jsonl(out / "metrics.jsonl", {"step": step, "loss": last_loss, "lr": schedule.get_last_lr()[0]})
        if step % cfg.save_every == 0 or step == total:
            save_checkpoint(out / "checkpoint", model, optimizer, schedule, {"step": step})
    bar.close()
    if world.main:
        check_finite_parameters(model, f"{out / 'adapter'}: the final adapter after step {step}")
        model.save_pretrained(out / "adapter")
    summary = {
        "examples": len(encoded),
        "pairs": len(pairs),
        "steps": step,
        "final_loss": last_loss,
        "adapter": str(out / "adapter"),
        "world_size": world.size,
    }
    if world.main:
        write_json_atomic(out / "summary.json", summary)
    return summary
