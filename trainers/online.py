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
of the held-out starts. A start, its episode id and every request seed depend on (seed, step, index) only, so
a rank plays exactly the dialogues one process would play for those indices; the update averages gradients
over ranks weighted by sequences, and the main rank writes the records gathered in start order, so the files
are the ones a single process writes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agents.engine import SamplingParams, request_seed
from agents.llm_agent import build_messages, parse_reply
from agents.runner import Pool, load_pool
from sotopia_env import EpisodeStart, Scenario, SocialParallelEnv, split
from sotopia_env.env import score_contexts, step_envs, would_earn_many
from sotopia_env.jsonio import append_jsonl, iter_jsonl, read_json, write_json_atomic, write_jsonl_atomic
from sotopia_env.policy import act_batch
from trainers import distributed
from trainers.grpo import Group, Learner, group_advantages
from trainers.grpo_config import GRPOConfig

AGENTS = ("agent_0", "agent_1")


@dataclass
class LearnerTurn:
    """One learner action as trained on: the prompt ids sampled from and the reply's ids."""

    agent: str
    turn: int
    prompt_ids: list[int]
    completion: list[int]


@dataclass
class Rollout:
    """One episode being played, with what training needs from it."""

    id: str
    env: SocialParallelEnv
    start: EpisodeStart
    obs: dict[str, Any] = field(default_factory=dict)
    turns: list[LearnerTurn] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)  # turn credit: one group per learner turn

    def learner_rewards(self, agent: str) -> list[float]:
        """The env's reward of each of `agent`'s learner turns, in order (non-speech earned 0)."""
        reward = {t.index: t.reward for t in self.env.episode.turns if t.agent == agent}
        return [reward.get(t.turn, 0.0) for t in self.turns if t.agent == agent]


def returns_to_go(rewards: Sequence[float], gamma: float) -> list[float]:
    """R_k = sum_{j >= k} gamma^(j - k) r_j: each turn's reward plus the discounted rewards of the same
    learner's later turns."""
    out, ret = [], 0.0
    for r in reversed(rewards):
        ret = r + gamma * ret
        out.append(ret)
    return out[::-1]


def position_advantages(returns: Sequence[Sequence[float]]) -> list[list[float]]:
    """Episode credit's advantages: returns[m][k] is the return-to-go of the learner's k-th turn in episode m
    of a group. Each turn position is normalised over the episodes that reached it, (R - mean) / (std + 1e-4)
    (`group_advantages`); a position only one episode reached has no baseline and gets 0."""
    out = [[0.0] * len(r) for r in returns]
    for k in range(max(map(len, returns), default=0)):
        members = [m for m, r in enumerate(returns) if len(r) > k]
        if len(members) > 1:
            adv = group_advantages(torch.tensor([[returns[m][k] for m in members]], dtype=torch.float64))[0]
            for m, a in zip(members, adv.tolist()):
                out[m][k] = a
    return out


class TimedReward:
    """The env's reward function, timed: `take()` gives the seconds spent in it since the last call."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.seconds = 0.0

    def _timed(self, call: Any, arg: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return call(arg)
        finally:
            self.seconds += time.perf_counter() - t0

    def __call__(self, context: Any) -> float:
        return self._timed(self.fn, context)

    def batch(self, contexts: Sequence[Any]) -> list[float]:
        return self._timed(lambda c: score_contexts(self.fn, c), contexts)

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
    """(training, held-out) scenario ids of the split (of `scenarios`, default the shipped library): a seeded
    fifth of them (at least one) is kept for evaluation."""
    ids = sorted(s.id for s in split(cfg.split, scenarios))
    if len(ids) < 2:
        raise ValueError(f"split {cfg.split!r} has {len(ids)} scenario(s); env rollouts hold some out: need 2+")
    random.Random(cfg.seed).shuffle(ids)
    held = max(1, len(ids) // 5)
    return ids[held:], ids[:held]


def step_starts(cfg: GRPOConfig, step: int, scenarios: Sequence[str]) -> list[EpisodeStart]:
    """The step's B starts. They depend on (seed, step, index) only, so a resumed run replays the same ones."""
    starts = []
    for i in range(cfg.prompts_per_step):
        rng = random.Random(request_seed(cfg.seed, "start", step, i))
        starts.append(EpisodeStart(rng.choice(list(scenarios)), rng.randrange(1 << 30), seat_plan(cfg, i)))
    return starts


class OnlineGRPO:
    """Plays rollouts for `Learner` and turns them into groups for its update."""

    def __init__(self, cfg: GRPOConfig, learner: Learner, reward_fn: Any, partner: Any, pool: Pool) -> None:
        self.cfg = cfg
        self.learner = learner
        self.reward_fn = TimedReward(reward_fn)
        self.times = dict.fromkeys(("learner_generate", "partner_generate", "env"), 0.0)
        self.partner = partner
        self.partner_name = "self-play" if partner is None else getattr(partner, "model_name", type(partner).__name__)
        # The scenario pool (agents.runner.load_pool): the shipped library's split, or a library folder's.
        scenarios, self.characters, self.pairings = pool
        self.scenarios = {s.id: s for s in split(cfg.split, scenarios)}

    # --- playing ---------------------------------------------------------------------------------------

    def new_rollout(self, episode_id: str, start: EpisodeStart, meta: dict[str, Any]) -> Rollout:
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
        env.episode.id = episode_id
        # Written with the episode once its step has computed the credit (`record`).
        env.episode.meta["training"] = {
            **meta,
            "adapter": self.learner.version,
            "learner_agents": list(start.learners),
            "partner": self.partner_name,
            "candidates": {},
        }
        return Rollout(episode_id, env, start, obs)

    def play(self, rollouts: list[Rollout], candidates: int) -> None:
        """Play the rollouts to their ends. candidates > 1: turn credit (G candidates per learner turn, one
        played, one group each); 1: the learner samples one reply per turn (episode credit, evaluation)."""
        cfg = self.cfg
        params = SamplingParams(
            n=candidates, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p
        )
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
        candidates, where, groups = [], [], []
        for (k, agent), obs, group, seed in zip(mine, seen, samples, seeds):
            r = live[k]
            replies = [parse_reply(x.text, obs["name"]) for x in group]
            completions = [self.learner.completion_ids(x) for x in group]
            chosen = random.Random(seed).randrange(len(group)) if len(group) > 1 else 0
            r.turns.append(LearnerTurn(agent, obs["turn"], group[chosen].prompt_token_ids, completions[chosen]))
            actions[k][agent] = replies[chosen]
            if len(group) == 1:
                continue
            # Turn credit: every candidate is scored as the env would score it here, non-speech at 0 as in `step`.
            entries = [
                {"text": x.argument, "action_type": x.action_type.name, "played": i == chosen, "reward": 0.0}
                for i, x in enumerate(replies)
            ]
            r.env.episode.meta["training"]["candidates"][str(obs["turn"])] = entries
            candidates += [(r.env, agent, reply) for reply in replies]
            where += entries
            groups.append((r, entries, Group(group[0].prompt_token_ids, completions, [])))
        # All of the round's candidates in one reward call; the played one's number is what the env gives it.
        for entry, value in zip(where, would_earn_many(candidates)):
            entry["reward"] = value
        for r, entries, g in groups:
            g.advantages = group_advantages(torch.tensor([[e["reward"] for e in entries]]))[0].tolist()
            r.groups.append(g)

    def take_times(self) -> dict[str, float]:
        """Seconds since the last call: learner and partner generation, the env's own work and the reward model."""
        times = {**self.times, "reward": self.reward_fn.take()}
        self.times = dict.fromkeys(self.times, 0.0)
        return times

    # --- credit ----------------------------------------------------------------------------------------

    # `starts` are (index in the step's B, start) pairs: all B in one process, a rank's share under a launcher.

    def turn_step(self, step: int, starts: list[tuple[int, EpisodeStart]]) -> tuple[list[Group], list[Rollout]]:
        rollouts = [self.new_rollout(f"train|{step}|{i}", s, {"step": step, "credit": "turn"}) for i, s in starts]
        self.play(rollouts, self.cfg.group_size)
        return [g for r in rollouts for g in r.groups], rollouts

    def episode_step(self, step: int, starts: list[tuple[int, EpisodeStart]]) -> tuple[list[Group], list[Rollout]]:
        cfg = self.cfg
        rollouts = [
            self.new_rollout(f"train|{step}|{i}|{m}", s, {"step": step, "credit": "episode", "member": m})
            for i, s in starts
            for m in range(cfg.group_size)
        ]
        self.play(rollouts, 1)
        groups = []
        for n, (_, start) in enumerate(starts):
            members = rollouts[n * cfg.group_size : (n + 1) * cfg.group_size]
            for agent in start.learners:
                returns = [returns_to_go(r.learner_rewards(agent), cfg.gamma) for r in members]
                # The members' k-th turns of this seat; those given the same prompt form one group, so the update
                # runs that prompt once (every member's first turn, when nothing sampled came before it).
                positions: list[dict[tuple[int, ...], Group]] = []
                for r, rets, advs in zip(members, returns, position_advantages(returns)):
                    record = r.env.episode.meta["training"].setdefault("returns", {})
                    for k, (turn, ret, adv) in enumerate(zip([t for t in r.turns if t.agent == agent], rets, advs)):
                        if k == len(positions):
                            positions.append({})
                        group = positions[k].setdefault(tuple(turn.prompt_ids), Group(turn.prompt_ids, [], []))
                        group.completions.append(turn.completion)
                        group.advantages.append(adv)
                        record[str(turn.turn)] = {"return": ret, "advantage": adv}
                groups.extend(g for position in positions for g in position.values())
        return groups, rollouts

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
        mine = [(r.env.episode, learner_utterance_rewards(r)) for r in rollouts]
        played = [pair for part in distributed.gather(mine) for pair in part]  # in start order: shards are blocks
        rewards = [x for _, rs in played for x in rs]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        if distributed.is_main():
            write_jsonl_atomic(out / f"eval_{tag}.jsonl", [episode for episode, _ in played])
            write_json_atomic(out / f"eval_{tag}.json", {"mean_reward": mean, "utterances": len(rewards)})
        return mean


def learner_utterance_rewards(r: Rollout) -> list[float]:
    """The env rewards of the learner's utterances in a played episode (what evaluation averages)."""
    return [t.reward for t in r.env.episode.turns if t.agent in r.start.learners and t.is_speech]


def _drop_steps_from(path: Path, step: int) -> None:
    """Resume: training episodes of steps not checkpointed are played again; drop their earlier copies."""
    if path.exists():
        keep = [r for r in iter_jsonl(path) if r.get("meta", {}).get("training", {}).get("step", -1) < step]
        write_jsonl_atomic(path, keep)


def train_online(cfg: GRPOConfig, progress: bool = True, rollout_engine: Any = None) -> dict[str, Any]:
    """GRPO with rollouts in the env (`cfg.rollout == "env"`); returns the summary (also OUT/summary.json)."""
    from agents.spec import make_policies
    from trainers.grpo import load_reward_model

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
            else read_json(out / "eval_before.json")["mean_reward"],
        }
        online.take_times()  # the evaluation's time is not the first step's
        for step in range(learner.start_step, cfg.steps):
            starts = distributed.shard(list(enumerate(step_starts(cfg, step, train_scenarios))))  # this rank's share
            t0 = time.perf_counter()
            play = online.turn_step if cfg.credit == "turn" else online.episode_step
            groups, rollouts = play(step, starts)
            t1 = time.perf_counter()
            mine = {
                "episodes": [r.env.episode for r in rollouts],
                "played": [t.reward for r in rollouts for t in r.env.episode.turns if t.agent in r.start.learners],
                "trained": sum(len(g.completions) for g in groups),
                "new_tokens": sum(len(c) for g in groups for c in g.completions),
                "times": {"time_rollout": t1 - t0, **{f"time_{k}": v for k, v in online.take_times().items()}},
            }
            ranks = distributed.gather(mine)  # the global step's, in start order (shards are contiguous blocks)
            if world.main:  # before the update: a resumed run drops a step's episodes unless it was checkpointed
                for episode in (e for r in ranks for e in r["episodes"]):
                    append_jsonl(episodes_path, episode)
            played = [x for r in ranks for x in r["played"]]
            stats = learner.update(step, groups)
            learner.end_step(
                step,
                {
                    "reward_mean": sum(played) / max(1, len(played)),
                    "trained_utterances": sum(r["trained"] for r in ranks),
                    "episodes": sum(len(r["episodes"]) for r in ranks),
                    **{k: stats[k] for k in ("kl", "clip_frac", "loss", "grad_norm", "lr")},
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
