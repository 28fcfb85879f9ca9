"""Sotopia-RL's single-turn GRPO on dialogue states (`--rollout states`): G replies per state, scored by the reward
model as the env would score them, one update (trainers/learner.py) per step.

    sotopia-env grpo --reward-model runs/rm/best --episodes runs/episodes.jsonl --steps 50

States come from recorded episodes (`--episodes`), a prompts file (`--prompts`: ours or Sotopia-RL's GRPO JSON),
or, with neither, from short scripted dialogues in the split. Each state knows its scenario and its speaker: the
speaker's name is how the env's agents parse a reply (a "Name:" prefix is dropped), and the scenario is what is
held out (trainers/heldout.py: whole scenarios, as in the env modes). Replies are sampled up to the end of their
line (`REPLY_STOP`) and trained on what they played only (`agents.played`).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agents.engine import request_seed
from agents.llm_agent import REPLY_STOP, build_messages
from agents.played import TrainedReply, end_ids, trained_reply
from sotopia_env.jsonio import read_json, write_json_atomic
from sotopia_env.observation import scenario_of, speaker_of
from trainers import distributed
from trainers.grpo_config import GRPOConfig
from trainers.grpo_math import group_advantages, reward_std, zero_std_fraction
from trainers.heldout import split_scenarios
from trainers.learner import (
    Learner,
    check_finite_rewards,
    group_of,
    load_reward_model,
    policy_sampling,
    reply_health,
)


@dataclass(frozen=True)
class State:
    """A dialogue state to sample replies at: the observation prompt, who speaks, and the scenario it belongs to."""

    prompt: str
    speaker: str | None
    scenario: str


def states_from_episodes(path: str) -> list[State]:
    from sotopia_env import read_episodes
    from sotopia_env.replay import utterance_states

    return [
        State(s.prompt, ep.characters[int(s.agent[-1])].name, ep.scenario.id)
        for ep in read_episodes(path)
        for s in utterance_states(ep)
    ]


def states_from_prompts(path: str) -> list[State]:
    """States of a prompts file. The scenario is the prompt's scenario line; a prompt of another shape (some
    Sotopia-RL inputs) is its own scenario, so only identical prompts are kept apart."""
    from rewards.sotopia_rl import read_prompts  # ours ({"prompt"}) or Sotopia-RL's GRPO JSON ({"input"})

    if not Path(path).is_file():
        raise FileNotFoundError(f"--prompts {path}: no such file")
    return [State(p, speaker_of(p), scenario_of(p) or p) for p in read_prompts(path)]


def states_online(count: int, scenarios: list[str], seed: int, library: str | None = None) -> list[State]:
    """States met by playing a few turns against a scripted partner in these scenarios (of the shipped library or
    of a library folder). The policy's own turns are scripted too: only the states matter, and this keeps prompt
    collection model-free and fast."""
    from agents.runner import load_pool
    from sotopia_env import ScriptedPolicy, SocialParallelEnv

    rng = random.Random(seed)
    pool, characters, pairings = load_pool(library)
    partner = ScriptedPolicy(["Hello. What brings you here?", "I see. What do you suggest?", "Hmm, tell me more."])
    openers = ["Hi, thanks for meeting me.", "I wanted to talk about something.", "Good to see you."]
    env = SocialParallelEnv(
        scenarios=[pool[s] for s in scenarios], characters=characters, pairings=pairings, max_turns=20
    )
    states = []
    while len(states) < count:
        obs, _ = env.reset(seed=rng.randrange(1 << 30))
        for _ in range(rng.randrange(0, 3)):  # 0-2 exchanges before the state we keep
            obs, *_ = env.step({"agent_0": rng.choice(openers)})
            obs, *_ = env.step({"agent_1": partner.act(obs["agent_1"])})
        states.append(State(obs["agent_0"]["prompt"], obs["agent_0"]["name"], env.scenario.id))
    return states


def split_states(cfg: GRPOConfig) -> tuple[list[State], list[State]]:
    """(training, held-out) states: deduplicated, whole scenarios held out (trainers/heldout.py), at most
    `heldout_states` held-out states (a seeded sample), and checked disjoint."""
    if cfg.prompts or cfg.episodes:
        states = states_from_prompts(cfg.prompts) if cfg.prompts else states_from_episodes(cfg.episodes)
        scenarios = {s.scenario for s in states}
        train_ids, held_ids = split_scenarios(scenarios, cfg.seed, f"the states of {cfg.prompts or cfg.episodes}")
    else:  # scripted states of the split, held out as the env modes hold out (the pool size is not tied to steps)
        from agents.runner import load_pool
        from sotopia_env import split

        ids = [s.id for s in split(cfg.split, load_pool(cfg.library)[0])]
        train_ids, held_ids = split_scenarios(ids, cfg.seed, f"split {cfg.split!r}")
        states = states_online(cfg.prompts_per_step * 64, train_ids, cfg.seed, cfg.library)
        states += states_online(cfg.heldout_states, held_ids, cfg.seed + 1, cfg.library)
    unique = list({s.prompt: s for s in states}.values())  # the same state twice would be trained and held out
    held = [s for s in unique if s.scenario in held_ids]
    train = [s for s in unique if s.scenario in train_ids]
    held = sorted(held, key=lambda s: s.prompt)
    random.Random(cfg.seed).shuffle(held)
    held = held[: cfg.heldout_states]
    assert not {s.scenario for s in held} & {s.scenario for s in train}, "a held-out scenario was trained on"
    if len(train) < cfg.prompts_per_step:
        raise ValueError(
            f"only {len(train)} training states in {len(train_ids)} scenarios (after holding out "
            f"{len(held_ids)}); need at least prompts_per_step={cfg.prompts_per_step}"
        )
    return train, held


def rewards_of(rm: Any, states: list[State], replies: list[TrainedReply], per_state: int) -> list[float]:
    """The reward of each reply as the env gives it: the reward model's score of the played utterance in its
    state, 0 for what is not perceived (none, leave)."""
    scored = [i for i, r in enumerate(replies) if r.action.is_speech]
    values = [0.0] * len(replies)
    if scored:
        scores = rm.score([states[i // per_state].prompt for i in scored], [replies[i].action.argument for i in scored])
        for i, value in zip(scored, scores):
            values[i] = float(value)
    return values


def train_offline(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """Single-turn GRPO on dialogue states; returns the summary (also in OUT/summary.json)."""
    out = Path(cfg.out)
    train_states, heldout = split_states(cfg)
    world = distributed.world()
    if cfg.prompts_per_step < world.size:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} is smaller than the {world.size} training processes: "
            "each rank needs at least one state per step; raise --prompts-per-step or start fewer processes"
        )
    rm = load_reward_model(cfg.reward_model)  # before the policy's vLLM engine (if any) sizes its memory share
    learner = Learner(cfg, rollout_engine, progress)
    ends = end_ids(learner.tokenizer, learner.model)
    source = f"the reward model {cfg.reward_model}"
    try:  # a failed run still closes what it started and gives a shared engine its budget back
        sampling = policy_sampling(cfg, cfg.group_size)

        def replies_to(states: list[State], samples: list[list[Any]]) -> list[TrainedReply]:
            return [
                trained_reply(x, learner.tokenizer, s.speaker, REPLY_STOP, ends)
                for s, group in zip(states, samples)
                for x in group
            ]

        def evaluate(tag: str) -> float:
            params = policy_sampling(cfg, cfg.eval_samples, logprobs=False)
            # Each held-out state keeps its seed across evaluations: before and after differ by the policy only.
            mine = distributed.shard(heldout)  # each rank samples and scores its share
            texts, rewards = [], []
            if mine:  # a rank may have no held-out state when there are fewer than ranks
                samples = learner.rollout.generate(
                    [build_messages({"prompt": s.prompt}) for s in mine],
                    params,
                    seeds=[request_seed(cfg.seed, "eval", s.prompt) for s in mine],
                )
                replies = replies_to(mine, samples)
                texts = [r.action.argument for r in replies]
                rewards = rewards_of(rm, mine, replies, cfg.eval_samples)
                check_finite_rewards(rewards, source)
            texts, rewards = _concat(distributed.gather(texts)), _concat(distributed.gather(rewards))
            mean = sum(rewards) / len(rewards)
            if distributed.is_main():
                write_json_atomic(out / f"eval_{tag}.json", {"mean_reward": mean, "samples": texts[:20]})
            return mean

        summary: dict[str, Any] = {
            "heldout_reward_before": evaluate("before")
            if learner.start_step == 0
            else distributed.on_main(lambda: read_json(out / "eval_before.json")["mean_reward"]),
            "heldout_states": len(heldout),
            "heldout_scenarios": len({s.scenario for s in heldout}),
        }
        for step in range(learner.start_step, cfg.steps):
            # 1. Sample G replies for each of B states, each up to its line's end. The data order depends only on
            #    (seed, step): a resumed run sees the same prompts and sampling seeds as an uninterrupted one.
            order_rng = random.Random(cfg.seed * 1_000_003 + step)
            batch = distributed.shard(order_rng.sample(train_states, cfg.prompts_per_step))  # this rank's share
            t0 = time.perf_counter()
            learner.model.eval()
            samples = learner.rollout.generate(
                [build_messages({"prompt": s.prompt}) for s in batch],
                sampling,
                seeds=[request_seed(cfg.seed, "train", step, s.prompt) for s in batch],
            )
            t1 = time.perf_counter()

            # 2. Score each reply as the env would: the played utterance, parsed with its speaker's name.
            replies = replies_to(batch, samples)
            rewards = rewards_of(rm, batch, replies, cfg.group_size)
            t2 = time.perf_counter()
            by_state = [rewards[i * cfg.group_size : (i + 1) * cfg.group_size] for i in range(len(batch))]
            finite = [all(map(math.isfinite, r)) for r in by_state]
            if cfg.nonfinite_rewards == "stop":
                check_finite_rewards(rewards, source)

            # 3. Group-relative advantages: each reply against the other replies to its state.
            kept = [i for i, ok in enumerate(finite) if ok]
            batch_std = reward_std(_concat(distributed.gather([x for i in kept for x in by_state[i]])))
            groups = []
            for i in kept:
                adv = group_advantages(torch.tensor([by_state[i]]), cfg.scale_rewards, batch_std)[0].tolist()
                replies_i = replies[i * cfg.group_size : (i + 1) * cfg.group_size]
                group = group_of(samples[i][0].prompt_token_ids, replies_i, adv)
                if group is not None:
                    groups.append(group)

            # 4. The update, on exactly the prompt ids the engine sampled from and the tokens each reply played.
            stats = learner.update(step, groups)
            ranks = distributed.gather(
                {
                    "rewards": [x for i in kept for x in by_state[i]],
                    "groups": [by_state[i] for i in kept],
                    "dropped": len(batch) - len(kept),
                    "replies": replies,
                    "new_tokens": sum(len(x.token_ids) for g in samples for x in g),
                    "trained": sum(len(g.completions) for g in groups),
                }
            )
            played = [x for r in ranks for x in r["rewards"]]
            new_tokens = sum(r["new_tokens"] for r in ranks)
            learner.end_step(
                step,
                {
                    "reward_mean": sum(played) / max(1, len(played)),
                    "reward_std": reward_std(played),
                    "trained_utterances": sum(r["trained"] for r in ranks),  # the global batch's
                    **{k: stats[k] for k in ("kl", "clip_frac", "loss", "grad_norm", "lr", "entropy")},
                    **{k: stats[k] for k in ("sampler_gap_mean", "sampler_gap_max", "sampler_kl") if k in stats},
                    "zero_std_groups": zero_std_fraction([g for r in ranks for g in r["groups"]]),
                    "groups_dropped_nonfinite": sum(r["dropped"] for r in ranks),
                    **reply_health([x for r in ranks for x in r["replies"]]),
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


def _concat(lists: list[list[Any]]) -> list[Any]:
    return [x for part in lists for x in part]
