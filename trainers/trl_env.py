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
prompt; `env_mask` (1 on tokens TRL should train, 0 on the others) joins TRL's loss mask,
and any other key is handed to the reward functions. (TRL's other multi-turn hook, `environment_factory`, calls
environment methods as tools through the chat template's tool-calling format, which SmolLM2's template lacks.)

One completion is one whole dialogue from the learner's seat, kept as one growing chat (`agents.multiturn`): the
learner's replies, with env_mask 1 on the tokens of what the env played (`agents.played`: a reply stops at its
line's end, and what the parser still drops, a "Name:" prefix or quotes, is 0) and on the end token the learner
sampled, and between them the env's turns, with env_mask 0: the template's turn boundaries, the partner's lines
and the closing line. TRL's
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
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from agents.engine import Sample, SamplingParams, request_seed
from agents.llm_agent import REPLY_STOP, build_messages
from agents.multiturn import turn_ids, turn_text
from agents.played import TrainedReply, end_ids, trained_reply
from agents.render import render_chat
from agents.transformers_engine import TransformersEngine
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
from sotopia_env.provenance import check_same_settings, scoped_id, settings_beside


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
    replies: list[TrainedReply] = field(default_factory=list)  # each learner turn as sampled, played and trained
    cut: bool = False  # stopped by TRL's max_completion_length before the episode ended

    @property
    def partner(self) -> str:
        return other_agent(self.learner)

    @property
    def playing(self) -> bool:
        return bool(self.env.agents) and not self.cut

    def add(self, ids: Sequence[int], mask: Sequence[int] | int, logprobs: Sequence[float] | None = None) -> None:
        """Append tokens to the dialogue's completion: env_mask 1 where TRL trains them (what the learner played),
        0 for context (the env's turns, and what the parser dropped of a reply)."""
        self.completion += ids
        self.env_mask += [mask] * len(ids) if isinstance(mask, int) else list(mask)
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
    # The run's id in every episode id (never in request seeds): by default the one recorded beside
    # `episodes_path` (made on the first call, so a resumed run keeps it), or a new one per EnvRollout.
    run_id: str | None = None
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
        if self.run_id is None:
            path = self.episodes_path
            self.run_id = (
                check_same_settings(path, settings_beside(path), {}) if path is not None else uuid.uuid4().hex[:8]
            )
        for d in dialogues:
            self._close(d, tokenizer, step)
            d.env.episode.id = scoped_id(self.run_id, d.env.episode.id)  # played under its key, recorded as the run's
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
            d.add(between, 0)
            d.last_seen = seen
            speaking.append(d)
        seeds = [request_seed(args.seed, d.env.episode.id, d.last_seen["turn"]) for d in speaking]
        samples = sample_replies(
            model,
            tokenizer,
            [d.prompt_ids + d.completion for d in speaking],
            seeds,
            self.max_new_tokens,
            args.temperature,
            args.top_p,
            self.batch_size,
        )
        ends = end_ids(tokenizer, model)
        actions: dict[int, dict[str, Any]] = {}
        for d, sample in zip(speaking, samples):
            # The whole reply stays in the dialogue (what follows was sampled after it); TRL trains only the tokens
            # of what the env played (agents.played), the rest is context like the partner's lines.
            reply = trained_reply(sample, tokenizer, d.last_seen["name"], REPLY_STOP, ends)
            d.add(sample.token_ids, reply.mask + [0] * (len(sample.token_ids) - len(reply.mask)), sample.logprobs)
            d.replies.append(reply)
            actions[id(d)] = {d.learner: reply.action}
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
            d.add([tokenizer.eos_token_id], 0)
        elif not d.cut and d.completion[-1] != tokenizer.eos_token_id:
            d.add([tokenizer.eos_token_id], 0)  # the episode ended: close the last reply's turn


def sample_replies(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    seeds: list[int],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    batch_size: int = 32,
) -> list[Sample]:
    """One reply per prompt (token ids), with each token's log-probability under the sampling distribution,
    sampled by the one sampler every engine here uses (`TransformersEngine.generate_ids`): softmax(logits / T)
    with top-p, nothing else, each row from its own seed, ending at the end of its line (`REPLY_STOP`) or of the
    sequence, whose token it keeps."""
    engine = TransformersEngine.from_model(model, tokenizer, model_name="trl", batch_size=batch_size)
    params = SamplingParams(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, logprobs=True, stop=REPLY_STOP
    )
    return [group[0] for group in engine.generate_ids(prompts, params, seeds)]


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
