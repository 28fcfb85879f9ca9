"""TRL's `GRPOTrainer` training in the env: a `rollout_func` that plays whole dialogues against a partner policy,
rewarded with the env's per-utterance rewards.

    rollout = EnvRollout(partner=partner, reward_fn=RewardModel.load("runs/rm/best").as_env_reward(), max_turns=8)
    trainer = trl.GRPOTrainer(
        model=model, processing_class=tokenizer, peft_config=lora,
        reward_funcs=learner_return, rollout_func=rollout, train_dataset=episode_starts("hard", 64),
        args=trl.GRPOConfig(num_generations=4, max_completion_length=512, ...),
    )

The hook: TRL 1.16 calls `rollout_func(prompts, trainer)` with this process's slice of dataset prompts (each start
repeated `num_generations` times, consecutively) and takes back `prompt_ids`, `completion_ids` and `logprobs` per
prompt; `env_mask` (1 on tokens the model produced, 0 on tokens the environment inserted) joins TRL's loss mask,
and any other key is handed to the reward functions. (TRL's other multi-turn hook, `environment_factory`, calls
environment methods as tools through the chat template's tool-calling format, which SmolLM2's template lacks.)

One completion is one whole dialogue from the learner's seat, kept as one growing chat (`agents.multiturn`): the
learner's replies, with env_mask 1 on the tokens it sampled (its end-of-turn token included), and between them the
env's turns, with env_mask 0: the template's turn boundaries, the partner's lines and the closing line. TRL's
loss, KL and length counts cover mask-1 tokens only, so partner turns are context, never trained on. Each reply
is sampled from exactly the ids TRL later scores (the prompt and the completion so far), at the trainer's
temperature and top-p.

Rewards: the env scores each learner utterance with its `reward_fn`, as `SocialParallelEnv.step` always does.
TRL's GRPO takes one reward per completion (one advantage per sequence, normalised over the G dialogues of a
start), so the per-utterance rewards reach TRL through the extra field `utterance_rewards` (per completion, the
env's reward of each learner turn in order; `none` and `leave` earn 0) and a reward function of it:
`learner_return` (their sum, the learner's episode return) or `mean_utterance_reward`. An advantage per turn is
what our own trainer does (`sotopia-env grpo --rollout env --credit turn|episode`); TRL's GRPO has none.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import LogitsProcessorList

from agents.engine import request_seed
from agents.llm_agent import build_messages, parse_reply
from agents.multiturn import turn_ids, turn_text
from agents.render import render_chat
from agents.transformers_engine import SeededSampler
from sotopia_env import (
    Character,
    Episode,
    EpisodeStart,
    Policy,
    RewardContext,
    Scenario,
    SocialParallelEnv,
    UtteranceReward,
    other_agent,
    split,
    step_envs,
)
from sotopia_env.jsonio import append_jsonl
from sotopia_env.policy import act_batch


def episode_starts(
    scenarios: str | Sequence[str] = "hard", count: int = 64, seed: int = 0, learner_seat: str = "alternate"
) -> Dataset:
    """A train dataset for `EnvRollout`: one row per episode start, its `prompt` the start as JSON (scenario id,
    the env seed that draws the character pairing, the learner's seat). scenarios: a split name or scenario ids;
    learner_seat: "0", "1" or "alternate"."""
    ids = sorted(s.id for s in split(scenarios)) if isinstance(scenarios, str) else list(scenarios)
    if not ids:
        raise ValueError(f"no scenarios in {scenarios!r}; give a split name (e.g. 'hard') or scenario ids")
    if str(learner_seat) not in ("0", "1", "alternate"):
        raise ValueError(f"learner_seat must be '0', '1' or 'alternate', not {learner_seat!r}")
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        seat = i % 2 if learner_seat == "alternate" else int(learner_seat)
        start = EpisodeStart(rng.choice(ids), rng.randrange(1 << 30), seat)
        rows.append({"prompt": start.to_json()})
    return Dataset.from_list(rows)


def parse_start(prompt: Any) -> EpisodeStart:
    """The episode start a dataset prompt names (see `episode_starts`)."""
    try:
        start = EpisodeStart.from_json(prompt)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"EnvRollout reads each dataset prompt as an episode start in JSON, not {str(prompt)[:80]!r}; "
            "build the train dataset with trainers.trl_env.episode_starts"
        ) from exc
    if len(start.learners) != 1:
        raise ValueError(f"an episode start for TRL names one learner seat (0 or 1), not {start.seat!r}")
    return start


@dataclass
class Dialogue:
    """One rollout: the env, and the learner's side of it as TRL trains on it."""

    env: SocialParallelEnv
    learner: str
    obs: dict[str, Any]
    last_seen: dict[str, Any] | None = None  # the learner's observation at its previous turn
    prompt_ids: list[int] = field(default_factory=list)
    completion: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)  # the env's reward of each learner turn
    cut: bool = False  # stopped by TRL's max_completion_length before the episode ended

    @property
    def partner(self) -> str:
        return other_agent(self.learner)

    @property
    def playing(self) -> bool:
        return bool(self.env.agents) and not self.cut

    def add(self, ids: Sequence[int], by_model: bool, logprobs: Sequence[float] | None = None) -> None:
        self.completion += ids
        self.env_mask += [int(by_model)] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)


@dataclass
class EnvRollout:
    """TRL `rollout_func`: each prompt (an episode start) becomes one dialogue of the trained model against
    `partner` in a `SocialParallelEnv` scored by `reward_fn`. All dialogues of a call play at once: per round one
    batched generation for the learners, one `act_batch` for the partner, one reward call (`step_envs`)."""

    partner: Policy
    reward_fn: UtteranceReward | Callable[[RewardContext], float]
    max_turns: int = 20
    max_new_tokens: int = 64  # per reply
    max_prompt_tokens: int = 1024  # the opening observation, fitted by agents.render
    scenarios: Sequence[Scenario] | str | None = None  # the pool start ids are looked up in (default: the library)
    # A library folder's characters and pairings (agents.runner.load_pool); default: the shipped library's.
    characters: Sequence[Character] | Mapping[str, Character] | None = None
    pairings: Mapping[str, Sequence[tuple[str, str]]] | None = None
    batch_size: int = 32  # sequences per generate call
    episodes_path: str | Path | None = None  # append every dialogue as an Episode (meta["trl"])
    episodes: list[Episode] = field(default_factory=list, init=False)  # the last call's dialogues

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list]:
        args, tokenizer = trainer.args, trainer.processing_class
        model = trainer.accelerator.unwrap_model(trainer.model)
        if self.max_new_tokens > args.max_completion_length:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) exceeds TRL's max_completion_length "
                f"({args.max_completion_length}), which bounds a whole dialogue; raise max_completion_length"
            )
        step, rank = trainer.state.global_step, trainer.accelerator.process_index
        name = f"trl:{getattr(model.config, '_name_or_path', 'policy')}@step{step}"
        dialogues = [
            self._start(parse_start(p), f"trl|{args.seed}|{step}|{rank}|{i}", name) for i, p in enumerate(prompts)
        ]
        was_training = model.training
        model.eval()
        try:
            while live := [d for d in dialogues if d.playing]:
                self._round(live, model, tokenizer, args)
        finally:
            model.train(was_training)
        for d in dialogues:
            self._close(d, tokenizer, step)
        self.episodes = [d.env.episode for d in dialogues]
        if self.episodes_path is not None:
            for d in dialogues:
                append_jsonl(self.episodes_path, d.env.episode)
        return {
            "prompt_ids": [d.prompt_ids for d in dialogues],
            "completion_ids": [d.completion for d in dialogues],
            "logprobs": [d.logprobs for d in dialogues],
            "env_mask": [d.env_mask for d in dialogues],
            "utterance_rewards": [d.rewards for d in dialogues],
        }

    def _start(self, start: EpisodeStart, episode_id: str, model_name: str) -> Dialogue:
        learner, partner = start.learner, start.partner
        env = SocialParallelEnv(
            scenarios=self.scenarios,
            characters=self.characters,
            pairings=self.pairings,
            max_turns=self.max_turns,
            reward_fn=self.reward_fn,
            agent_models={
                learner: model_name,
                partner: getattr(self.partner, "model_name", type(self.partner).__name__),
            },
        )
        obs, _ = env.reset(seed=start.seed, options=start.options())
        env.episode.id = episode_id
        return Dialogue(env, learner, obs)

    def _round(self, live: list[Dialogue], model: Any, tokenizer: Any, args: Any) -> None:
        speaking = []  # learners whose reply fits what is left of the completion budget
        for d in (d for d in live if d.learner in d.env.active_agents):
            seen = d.obs[d.learner]
            if d.last_seen is None:
                d.prompt_ids = render_chat(tokenizer, build_messages(seen), self.max_prompt_tokens).ids
                between: list[int] = []
            else:  # what happened since its last reply, as the next user turn
                between = turn_ids(tokenizer, turn_text(d.last_seen, seen))
                if between and d.completion and d.completion[-1] == between[0]:
                    between = between[1:]  # the end-of-turn token the learner sampled itself
            if len(d.completion) + len(between) + self.max_new_tokens > args.max_completion_length:
                d.cut = True
                continue
            d.add(between, by_model=False)
            d.last_seen = seen
            speaking.append(d)
        seeds = [request_seed(args.seed, d.env.episode.id, d.last_seen["turn"]) for d in speaking]
        replies = sample_replies(
            model,
            tokenizer,
            [d.prompt_ids + d.completion for d in speaking],
            seeds,
            self.max_new_tokens,
            args.temperature,
            args.top_p,
            self.batch_size,
        )
        actions: dict[int, dict[str, Any]] = {}
        for d, (ids, logprobs) in zip(speaking, replies):
            d.add(ids, by_model=True, logprobs=logprobs)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            actions[id(d)] = {d.learner: parse_reply(text, d.last_seen["name"])}
        waiting = [d for d in live if not d.cut and d.partner in d.env.active_agents]
        partner_obs = [d.obs[d.partner] for d in waiting]
        keys = [(d.env.episode.id, o["turn"], o["seat"]) for d, o in zip(waiting, partner_obs)]
        for d, action in zip(waiting, act_batch(self.partner, partner_obs, keys)):
            actions.setdefault(id(d), {})[d.partner] = action
        stepping = [d for d in live if id(d) in actions]
        for d, (obs, rewards, *_) in zip(
            stepping, step_envs([d.env for d in stepping], [actions[id(d)] for d in stepping])
        ):
            d.obs = obs
            if d.learner in actions[id(d)]:
                d.rewards.append(float(rewards.get(d.learner, 0.0)))

    def _close(self, d: Dialogue, tokenizer: Any, step: int) -> None:
        d.env.episode.meta["trl"] = {"step": step, "learner": d.learner, "utterance_rewards": d.rewards, "cut": d.cut}
        if not d.completion:  # the partner ended the episode before the learner's first move: nothing to train on
            d.prompt_ids = render_chat(tokenizer, build_messages(d.obs[d.learner]), self.max_prompt_tokens).ids
            d.add([tokenizer.eos_token_id], by_model=False)
        elif not d.cut and d.completion[-1] != tokenizer.eos_token_id:
            d.add([tokenizer.eos_token_id], by_model=False)  # the episode ended: close the last reply's turn


@torch.no_grad()
def sample_replies(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    seeds: list[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int = 32,
) -> list[tuple[list[int], list[float]]]:
    """One reply per prompt (token ids), with each token's log-probability under the sampling distribution; a
    reply ends with the first end-of-sequence token, which it keeps. Each row samples from its own seed
    (`SeededSampler`), so a reply does not depend on the batch it shared."""
    device = next(model.parameters()).device
    eos = model.generation_config.eos_token_id
    stop = {tokenizer.eos_token_id, *(eos if isinstance(eos, list) else [eos])} - {None}
    out: list[tuple[list[int], list[float]]] = []
    for first in range(0, len(prompts), batch_size):
        rows = prompts[first : first + batch_size]
        batch = tokenizer.pad({"input_ids": rows}, padding_side="left", return_tensors="pt").to(device)
        sampler = SeededSampler(seeds[first : first + len(rows)], temperature, top_p, str(device), keep_logprobs=True)
        generated = model.generate(
            **batch,
            do_sample=False,  # the sampler's draw is the argmax of its output
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            logits_processor=LogitsProcessorList([sampler]),
            pad_token_id=tokenizer.pad_token_id,
            use_cache=True,
            return_dict_in_generate=True,
        )
        new = generated.sequences[:, batch["input_ids"].shape[1] :]
        logprobs = sampler.chosen_logprobs(new)
        for ids, lps in zip(new.tolist(), logprobs.tolist()):
            end = next((k + 1 for k, t in enumerate(ids) if t in stop), len(ids))
            out.append((ids[:end], lps[:end]))
    return out


def learner_return(utterance_rewards: list[list[float]] | None = None, **_: Any) -> list[float]:
    """TRL reward function: per completion, the sum of the env's rewards of the learner's utterances."""
    return [float(sum(r)) for r in _rewards(utterance_rewards)]


def mean_utterance_reward(utterance_rewards: list[list[float]] | None = None, **_: Any) -> list[float]:
    """TRL reward function: per completion, the mean env reward of the learner's turns (0 when it had none)."""
    return [float(sum(r) / len(r)) if r else 0.0 for r in _rewards(utterance_rewards)]


def _rewards(utterance_rewards: list[list[float]] | None) -> list[list[float]]:
    if utterance_rewards is None:
        raise ValueError(
            "this reward function reads `utterance_rewards`, which EnvRollout adds: pass rollout_func=EnvRollout(...)"
        )
    return utterance_rewards
