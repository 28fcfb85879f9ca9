"""GRPO in the environment: the policy plays whole dialogues in `SocialParallelEnv`s, the env's reward function
(the reward-model wrapper) rewards each utterance, and the update (`grpo.Learner`) is the one offline GRPO uses.

    sotopia-env grpo --rollout env --credit turn --reward-model runs/rm/best --partner embedded

Each step plays B starts (scenario, character pairing, learner seat), all episodes at once: every round the
learner's requests go to the rollout engine in one call and the partner's in one `act_batch`, and the env
scores the round's utterances in one reward call (`step_envs`).

Credit (`--credit`):
- turn (Sotopia-RL's online single-turn RL): at each learner turn, G candidates from the current policy, each
  scored with the env's own reward of that candidate at that point (`SocialParallelEnv.reward_context`, the
  function and context `step` uses). Advantages: A_i = (r_i - mean(r)) / (std(r) + 1e-4) within the G. One
  candidate, drawn at random, is played and the dialogue goes on.
- episode (multi-turn GRPO): G whole episodes from the same start. The learner's k-th turn in episode m gets its
  return-to-go R_k = sum_{j >= k} gamma^(j - k) r_j over that learner's later per-utterance rewards r_j, and the
  advantage (R_k - mean) / (std + 1e-4) over the G episodes' k-th turns (those that have one). Normalised per
  turn position, not over whole episodes: an early turn's return sums more rewards than a late one's, so one
  baseline for all positions would favour early turns whatever was said.

Every training dialogue is written to OUT/episodes.jsonl as an `Episode`; `meta["training"]` holds the step,
the adapter version that spoke, the credit mode and (turn credit) each learner turn's candidates with their
rewards. The held-out reward is measured on-policy: episodes in scenarios kept out of training, played by the
policy before and after, the mean env reward of its utterances.

Under torch.distributed (torchrun, accelerate launch) each rank plays its `shard` of the step's B starts and
of the held-out starts. A start, its episode id (after the run's id) and every request seed depend on (seed, step,
index) only, so a rank plays exactly the dialogues one process would play for those indices; the update averages
gradients over ranks weighted by sequences, and the main rank writes the records gathered in start order, so the
files are the ones a single process writes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.engine import SamplingParams, request_seed
from agents.llm_agent import REPLY_STOP, build_messages
from agents.played import TrainedReply, end_ids, trained_reply
from agents.runner import Pool, load_pool
from sotopia_env import EpisodeStart, RewardContext, Scenario, SocialParallelEnv, split
from sotopia_env.env import describe_reward, score_contexts, step_envs, would_earn_many
from sotopia_env.jsonio import append_jsonl, read_json, write_json_atomic, write_jsonl_atomic
from sotopia_env.policy import act_batch
from sotopia_env.provenance import recorded_run_id, scoped_id
from trainers import distributed
from trainers.checkpoint import resume_records
from trainers.grpo_config import GRPOConfig
from trainers.grpo_math import position_advantages, ragged_advantages, returns_to_go, reward_std, zero_std_fraction
from trainers.heldout import split_scenarios
from trainers.learner import Group, Learner, group_of, load_reward_model, policy_sampling, reply_health

AGENTS = ("agent_0", "agent_1")


@dataclass
class LearnerTurn:
    """One learner action as played and trained on: the prompt it was sampled at (ids and text) and the reply."""

    agent: str
    turn: int
    prompt_ids: list[int]
    reply: TrainedReply
    prompt: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.prompt, self.agent, self.reply.action.argument)


@dataclass
class Rollout:
    """One episode being played, with what training needs from it."""

    id: str  # the rollout's key, which seeds its requests; its episode's id also names the run
    env: SocialParallelEnv
    start: EpisodeStart
    obs: dict[str, Any] = field(default_factory=dict)
    dropped: int = 0  # groups left out because a reward in them was not finite (--nonfinite-rewards drop)
    turns: list[LearnerTurn] = field(default_factory=list)
    # turn credit: per learner turn, its candidates' replies and rewards (advantages come at the step's end)
    candidates: list[tuple[list[int], list[TrainedReply], list[float]]] = field(default_factory=list)

    def learner_rewards(self, agent: str) -> list[float]:
        """The env's reward of each of `agent`'s learner turns, in order (non-speech earned 0)."""
        reward = {t.index: t.reward for t in self.env.episode.turns if t.agent == agent}
        return [reward.get(t.turn, 0.0) for t in self.turns if t.agent == agent]


def reward_key(context: RewardContext) -> tuple[str, str, str]:
    """What identifies a scored utterance for `TimedReward.nonfinite`: the state, the speaker, the utterance."""
    return (context.prompt, context.agent, context.action.argument)


class TimedReward:
    """The env's reward function, timed: `take()` gives the seconds spent in it since the last call.

    drop_nonfinite (`--nonfinite-rewards drop`): a value that is not finite is given to the env as 0.0 and its
    utterance remembered in `nonfinite` (by `reward_key`), so the trainer leaves every group it touches out of
    the update; otherwise the env stops the run with an error naming the function and the utterance."""

    def __init__(self, fn: Any, drop_nonfinite: bool = False) -> None:
        self.fn = fn
        self.description = describe_reward(fn)  # errors name the function inside, not this wrapper
        self.seconds = 0.0
        self.drop_nonfinite = drop_nonfinite
        self.nonfinite: set[tuple[str, str, str]] = set()

    def _timed(self, call: Any, arg: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return call(arg)
        finally:
            self.seconds += time.perf_counter() - t0

    def __call__(self, context: Any) -> float:
        return self.batch([context])[0]

    def batch(self, contexts: Sequence[Any]) -> list[float]:
        values = self._timed(lambda c: score_contexts(self.fn, c, self.drop_nonfinite), contexts)
        for context, value in zip(contexts, values):
            if not math.isfinite(value):
                self.nonfinite.add(reward_key(context))
        return [v if math.isfinite(v) else 0.0 for v in values]

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def seat_plan(cfg: GRPOConfig, index: int) -> int | str:
    if cfg.learner_seat == "both":
        return "both"
    if cfg.learner_seat == "alternate":
        return index % 2
    return int(cfg.learner_seat)


def scenario_split(cfg: GRPOConfig, scenarios: Mapping[str, Scenario] | None = None) -> tuple[list[str], list[str]]:
    """(training, held-out) scenario ids of the split (of `scenarios`, default the shipped library): whole
    scenarios held out, the rule of every mode (trainers/heldout.py)."""
    return split_scenarios((s.id for s in split(cfg.split, scenarios)), cfg.seed, f"split {cfg.split!r}")


def step_starts(cfg: GRPOConfig, step: int, scenarios: Sequence[str]) -> list[EpisodeStart]:
    """The step's B starts. They depend on (seed, step, index) only, so a resumed run replays the same ones."""
    starts = []
    for i in range(cfg.prompts_per_step):
        rng = random.Random(request_seed(cfg.seed, "start", step, i))
        starts.append(EpisodeStart(rng.choice(list(scenarios)), rng.randrange(1 << 30), seat_plan(cfg, i)))
    return starts


@dataclass
class StepData:
    """What a step's play gives the update and the log: the groups, the rollouts, the values each group's
    advantages were computed from (rewards, or returns per turn position), and the groups left out because a
    reward in them was not finite."""

    groups: list[Group]
    rollouts: list[Rollout]
    reward_groups: list[list[float]]
    dropped: int


class OnlineGRPO:
    """Plays rollouts for `Learner` and turns them into groups for its update."""

    def __init__(self, cfg: GRPOConfig, learner: Learner, reward_fn: Any, partner: Any, pool: Pool) -> None:
        self.cfg = cfg
        self.learner = learner
        self.reward_fn = TimedReward(reward_fn, drop_nonfinite=cfg.nonfinite_rewards == "drop")
        self.ends = end_ids(learner.tokenizer, learner.model)
        self.times = dict.fromkeys(("learner_generate", "partner_generate", "env"), 0.0)
        self.partner = partner
        self.partner_name = "self-play" if partner is None else getattr(partner, "model_name", type(partner).__name__)
        # The scenario pool (agents.runner.load_pool): the shipped library's split, or a library folder's.
        scenarios, self.characters, self.pairings = pool
        self.scenarios = {s.id: s for s in split(cfg.split, scenarios)}
        # Made by train_grpo's settings check; read by the main rank (the others may not share its disk).
        self.run_id = distributed.on_main(lambda: recorded_run_id(Path(cfg.out) / "config.json"))

    # --- playing ---------------------------------------------------------------------------------------

    def new_rollout(self, key: str, start: EpisodeStart, meta: dict[str, Any]) -> Rollout:
        models = {
            a: f"grpo:{self.cfg.base}@{self.learner.version}" if a in start.learners else self.partner_name
            for a in AGENTS
        }
        env = SocialParallelEnv(
            scenarios=self.scenarios,
            characters=self.characters,
            pairings=self.pairings,
            max_turns=self.cfg.max_turns,
            reward_fn=self.reward_fn,
            agent_models=models,
        )
        obs, _ = env.reset(seed=start.seed, options=start.options())
        # The record's id names the run (and an evaluation its tag), so no two runs' dialogues share one; the
        # rollout's key, the same in every run and in both evaluations, seeds its requests.
        env.episode.id = scoped_id(self.run_id, f"{key}|{meta['eval']}" if "eval" in meta else key)
        # Written with the episode once its step has computed the credit (`record`).
        env.episode.meta["training"] = {
            **meta,
            "adapter": self.learner.version,
            "learner_agents": list(start.learners),
            "partner": self.partner_name,
            "candidates": {},
        }
        return Rollout(key, env, start, obs)

    def play(self, rollouts: list[Rollout], candidates: int) -> None:
        """Play the rollouts to their ends. candidates > 1: turn credit (G candidates per learner turn, one
        played, one group each); 1: the learner samples one reply per turn (episode credit, evaluation)."""
        cfg = self.cfg
        params = policy_sampling(cfg, candidates)
        while live := [r for r in rollouts if r.env.agents]:
            actions: list[dict[str, Any]] = [{} for _ in live]
            mine = [(k, a) for k, r in enumerate(live) for a in r.env.active_agents if a in r.start.learners]
            theirs = [(k, a) for k, r in enumerate(live) for a in r.env.active_agents if a not in r.start.learners]
            if mine:
                self._learner_acts(live, mine, params, actions)
            t0 = time.perf_counter()
            if theirs:
                seen = [live[k].obs[a] for k, a in theirs]
                keys = [(live[k].id, o["turn"], o["seat"]) for (k, _), o in zip(theirs, seen)]
                for (k, a), action in zip(theirs, act_batch(self.partner, seen, keys)):
                    actions[k][a] = action
            t1, scored = time.perf_counter(), self.reward_fn.seconds
            for r, result in zip(live, step_envs([r.env for r in live], actions)):
                r.obs = result[0]
            self.times["partner_generate"] += t1 - t0
            # The env's own work: stepping, observing, recording; the reward calls inside are the reward's.
            self.times["env"] += time.perf_counter() - t1 - (self.reward_fn.seconds - scored)

    def _learner_acts(
        self, live: list[Rollout], mine: list[tuple[int, str]], params: SamplingParams, actions: list[dict]
    ) -> None:
        cfg = self.cfg
        seen = [live[k].obs[a] for k, a in mine]
        seeds = [request_seed(cfg.seed, live[k].id, o["turn"], o["seat"]) for (k, _), o in zip(mine, seen)]
        self.learner.model.eval()
        t0 = time.perf_counter()
        samples = self.learner.rollout.generate([build_messages(o) for o in seen], params, seeds)
        self.times["learner_generate"] += time.perf_counter() - t0
        candidates, where, turns = [], [], []
        for (k, agent), obs, group, seed in zip(mine, seen, samples, seeds):
            r = live[k]
            replies = [trained_reply(x, self.learner.tokenizer, obs["name"], REPLY_STOP, self.ends) for x in group]
            chosen = random.Random(seed).randrange(len(group)) if len(group) > 1 else 0
            r.turns.append(
                LearnerTurn(agent, obs["turn"], group[chosen].prompt_token_ids, replies[chosen], obs["prompt"])
            )
            actions[k][agent] = replies[chosen].action
            if len(group) == 1:
                continue
            # Turn credit: every candidate is scored as the env would score it here, non-speech at 0 as in `step`.
            entries = [
                {
                    "text": x.action.argument,
                    "action_type": x.action.action_type.name,
                    "played": i == chosen,
                    "reward": 0.0,
                    "trained": not x.untrained,  # False: the parser's cut fell inside a token (agents.played)
                }
                for i, x in enumerate(replies)
            ]
            r.env.episode.meta["training"]["candidates"][str(obs["turn"])] = entries
            candidates += [(r.env, agent, x.action) for x in replies]
            where += entries
            turns.append((r, entries, group[0].prompt_token_ids, replies, obs["prompt"], agent))
        # All of the round's candidates in one reward call; the played one's number is what the env gives it.
        for entry, value in zip(where, would_earn_many(candidates)):
            entry["reward"] = value
        for r, entries, prompt_ids, replies, prompt, agent in turns:
            if any((prompt, agent, x.action.argument) in self.reward_fn.nonfinite for x in replies):
                r.dropped += 1  # a candidate's reward was not finite: the turn is left out of the update
                continue
            r.candidates.append((prompt_ids, replies, [e["reward"] for e in entries]))

    def take_times(self) -> dict[str, float]:
        """Seconds since the last call: learner and partner generation, the env's own work and the reward model."""
        times = {**self.times, "reward": self.reward_fn.take()}
        self.times = dict.fromkeys(self.times, 0.0)
        return times

    # --- credit ----------------------------------------------------------------------------------------

    # `starts` are (index in the step's B, start) pairs: all B in one process, a rank's share under a launcher.

    def batch_std(self, values: list[float]) -> float | None:
        """The standard deviation of the global step's values, for `--scale-rewards batch` (None otherwise)."""
        if self.cfg.scale_rewards != "batch":
            return None
        return reward_std([x for part in distributed.gather(values) for x in part])

    def turn_step(self, step: int, starts: list[tuple[int, EpisodeStart]]) -> StepData:
        rollouts = [self.new_rollout(f"train|{step}|{i}", s, {"step": step, "credit": "turn"}) for i, s in starts]
        self.play(rollouts, self.cfg.group_size)
        turns = [c for r in rollouts for c in r.candidates]
        rewards = [values for _, _, values in turns]
        advantages = ragged_advantages(rewards, self.cfg.scale_rewards, self.batch_std([x for g in rewards for x in g]))
        groups = [group_of(ids, replies, adv) for (ids, replies, _), adv in zip(turns, advantages)]
        return StepData([g for g in groups if g is not None], rollouts, rewards, sum(r.dropped for r in rollouts))

    def episode_step(self, step: int, starts: list[tuple[int, EpisodeStart]]) -> StepData:
        cfg = self.cfg
        rollouts = [
            self.new_rollout(f"train|{step}|{i}|{m}", s, {"step": step, "credit": "episode", "member": m})
            for i, s in starts
            for m in range(cfg.group_size)
        ]
        self.play(rollouts, 1)
        plans, dropped = [], 0
        for n, (_, start) in enumerate(starts):
            members = rollouts[n * cfg.group_size : (n + 1) * cfg.group_size]
            if any(t.key in self.reward_fn.nonfinite for r in members for t in r.turns):
                dropped += 1  # a learner reward was not finite: its returns would carry it to every member
                continue
            for agent in start.learners:
                plans.append((members, agent, [returns_to_go(r.learner_rewards(agent), cfg.gamma) for r in members]))
        batch_std = self.batch_std([x for _, _, returns in plans for rets in returns for x in rets])
        groups, reward_groups = [], []
        for members, agent, returns in plans:
            # The members' k-th turns of this seat; those given the same prompt form one group, so the update runs
            # that prompt once (every member's first turn, when nothing sampled came before it).
            positions: list[dict[tuple[int, ...], Group]] = []
            for r, rets, advs in zip(members, returns, position_advantages(returns, cfg.scale_rewards, batch_std)):
                record = r.env.episode.meta["training"].setdefault("returns", {})
                for k, (turn, ret, adv) in enumerate(zip([t for t in r.turns if t.agent == agent], rets, advs)):
                    if k == len(positions):
                        positions.append({})
                    if not turn.reply.untrained:
                        group = positions[k].setdefault(tuple(turn.prompt_ids), Group(turn.prompt_ids))
                        group.add(turn.reply, adv)
                    record[str(turn.turn)] = {"return": ret, "advantage": adv, "trained": not turn.reply.untrained}
            groups.extend(g for position in positions for g in position.values())
            reward_groups += [[rets[k] for rets in returns if len(rets) > k] for k in range(len(positions))]
        return StepData(groups, rollouts, reward_groups, dropped)

    # --- evaluation ------------------------------------------------------------------------------------

    def evaluate(self, tag: str, heldout: Sequence[str], out: Path) -> float:
        """Mean env reward of the policy's utterances in held-out episodes (same starts and seeds every time).
        Each rank plays its share of the starts; the main rank writes them all, in start order."""
        starts = [
            EpisodeStart(
                heldout[k % len(heldout)], request_seed(self.cfg.seed, "eval", k) % (1 << 30), seat_plan(self.cfg, k)
            )
            for k in range(self.cfg.heldout_states)
        ]
        rollouts = [
            self.new_rollout(f"eval|{k}", s, {"eval": tag}) for k, s in distributed.shard(list(enumerate(starts)))
        ]
        self.play(rollouts, 1)
        mine = [(r.env.episode, learner_utterance_rewards(r, self.reward_fn.nonfinite)) for r in rollouts]
        played = [pair for part in distributed.gather(mine) for pair in part]  # in start order: shards are blocks
        rewards = [x for _, rs in played for x in rs]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        if distributed.is_main():
            write_jsonl_atomic(out / f"eval_{tag}.jsonl", [episode for episode, _ in played])
            write_json_atomic(out / f"eval_{tag}.json", {"mean_reward": mean, "utterances": len(rewards)})
        return mean


def learner_utterance_rewards(r: Rollout, nonfinite: set[tuple[str, str, str]] = frozenset()) -> list[float]:
    """The env rewards of the learner's utterances in a played episode (what evaluation averages), less those
    whose reward was not finite (`--nonfinite-rewards drop` gave the env 0 for them)."""
    reward = {(t.agent, t.index): t.reward for t in r.env.episode.turns}
    return [
        reward[(t.agent, t.turn)]
        for t in r.turns
        if t.reply.action.is_speech and t.key not in nonfinite and (t.agent, t.turn) in reward
    ]


def sampled_replies(data: StepData, credit: str) -> list[TrainedReply]:
    """Every reply the learner sampled in a step: all candidates (turn credit), every played turn (episode)."""
    if credit == "turn":
        return [x for r in data.rollouts for _, replies, _ in r.candidates for x in replies]
    return [t.reply for r in data.rollouts for t in r.turns]


def _drop_steps_from(path: Path, step: int) -> None:
    """Resume: training episodes of steps not checkpointed are played again; drop their earlier copies."""
    resume_records(path, step, lambda r: r.get("meta", {}).get("training", {}).get("step", -1) + 1, "training episodes")


def train_online(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """GRPO with rollouts in the env (`cfg.rollout == "env"`); returns the summary (also OUT/summary.json)."""
    from agents.spec import make_policies

    out = Path(cfg.out)
    pool = load_pool(cfg.library)  # read once, before any model loads: a bad library fails fast
    train_scenarios, heldout = scenario_split(cfg, pool[0])
    world = distributed.setup()
    if cfg.prompts_per_step < world.size:
        raise ValueError(
            f"prompts_per_step={cfg.prompts_per_step} is smaller than the {world.size} training processes: each rank "
            "plays at least one start per step; raise --prompts-per-step or start fewer processes"
        )
    partner: Any = None  # self-play: the learner holds both seats
    if cfg.learner_seat != "both":
        params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=0.7, top_p=0.95, seed=cfg.seed)
        (partner,) = make_policies([cfg.partner], params)
    # Loaded before the policy's vLLM engine (if any) sizes its memory share: see trainers.colocate.
    reward_fn = load_reward_model(cfg.reward_model).as_env_reward()
    learner = Learner(cfg, rollout_engine, progress)
    try:  # a failed run still closes what it started and gives a shared engine its budget back
        online = OnlineGRPO(cfg, learner, reward_fn, partner, pool)
        episodes_path = out / "episodes.jsonl"
        if world.main:
            _drop_steps_from(episodes_path, learner.start_step)
        summary: dict[str, Any] = {
            "rollout": "env",
            "credit": cfg.credit,
            "heldout_reward_before": online.evaluate("before", heldout, out)
            if learner.start_step == 0
            else distributed.on_main(lambda: read_json(out / "eval_before.json")["mean_reward"]),
        }
        online.take_times()  # the evaluation's time is not the first step's
        for step in range(learner.start_step, cfg.steps):
            starts = distributed.shard(list(enumerate(step_starts(cfg, step, train_scenarios))))  # this rank's share
            t0 = time.perf_counter()
            play = online.turn_step if cfg.credit == "turn" else online.episode_step
            data = play(step, starts)
            t1 = time.perf_counter()
            nonfinite = online.reward_fn.nonfinite
            for r in data.rollouts:  # the utterances whose reward was not finite: recorded as 0, never trained on
                flagged = [t.turn for t in r.turns if t.key in nonfinite]
                if flagged:
                    r.env.episode.meta["training"]["nonfinite_rewards"] = flagged
            mine = {
                "episodes": [r.env.episode for r in data.rollouts],
                "played": [x for r in data.rollouts for x in learner_utterance_rewards(r, nonfinite)],
                "trained": sum(len(g.completions) for g in data.groups),
                "new_tokens": sum(len(x.ids) for x in sampled_replies(data, cfg.credit)),
                "reward_groups": data.reward_groups,
                "dropped": data.dropped,
                "replies": sampled_replies(data, cfg.credit),
                "times": {"time_rollout": t1 - t0, **{f"time_{k}": v for k, v in online.take_times().items()}},
            }
            ranks = distributed.gather(mine)  # the global step's, in start order (shards are contiguous blocks)
            if world.main:  # before the update: a resumed run drops a step's episodes unless it was checkpointed
                for episode in (e for r in ranks for e in r["episodes"]):
                    append_jsonl(episodes_path, episode)
            played = [x for r in ranks for x in r["played"]]
            stats = learner.update(step, data.groups)
            learner.end_step(
                step,
                {
                    "reward_mean": sum(played) / max(1, len(played)),
                    "trained_utterances": sum(r["trained"] for r in ranks),
                    "episodes": sum(len(r["episodes"]) for r in ranks),
                    **{k: stats[k] for k in ("kl", "clip_frac", "loss", "grad_norm", "lr", "entropy")},
                    **{k: stats[k] for k in ("sampler_gap_mean", "sampler_gap_max", "sampler_kl") if k in stats},
                    "zero_std_groups": zero_std_fraction([g for r in ranks for g in r["reward_groups"]]),
                    "groups_dropped_nonfinite": sum(r["dropped"] for r in ranks),
                    **reply_health([x for r in ranks for x in r["replies"]]),
                    "new_tokens": sum(r["new_tokens"] for r in ranks),
                    # The slowest rank's seconds: the step waits for it.
                    **{k: max(r["times"][k] for r in ranks) for k in mine["times"]},
                    "time_update": stats["time_update"],
                    "time_sync": stats["time_sync"],
                },
            )
        summary["heldout_reward_after"] = online.evaluate("after", heldout, out)
        summary["episodes"] = str(episodes_path)
        learner.finish(summary)
        if world.main:
            write_json_atomic(out / "summary.json", summary)
        return summary
    finally:
        learner.close()
