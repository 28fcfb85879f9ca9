"""How far the judge agrees with people: `sotopia-env agreement RATINGS --episodes JUDGED`.

    sotopia-env agreement runs/ratings.jsonl --episodes runs/benchmark --out runs/agreement

An item is one episode's seat under test; people's score on an item is the mean of its raters' scores. Per
dimension (of the set the ratings were made on), the report gives:
- per policy, people's mean with a 95% bootstrap interval over items, the judge's mean on the same items, and
  the judge's bias (judge minus people, per item, then averaged, with its interval): Sotopia-pi found judges
  overrate socially trained agents, which shows here as a larger bias for the trained policy;
- the judge-vs-people correlation over items, Pearson and Spearman, with bootstrap intervals over items;
- inter-rater agreement, Krippendorff's alpha (interval scale), over the items two or more raters scored.
Files: OUT/agreement.md, OUT/agreement.csv (per dimension and policy), OUT/correlation.csv (per dimension)
and OUT/scatter_<dimension>.png (judge against people, one colour per policy). The policy of an item is the
model its episode records for that seat; raters never see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rewards.dimensions import DimensionSet, dimension_set, recorded_dimensions
from rewards.ratings import Item, Rating, people_scores, read_ratings
from sotopia_env import Episode, read_episodes
from sotopia_env.cli import config_error
from sotopia_env.jsonio import write_text_atomic

from .hard_tasks import benchmark_policy
from .report import _code, _csv
from .stats import Estimate, bootstrap_ci, bootstrap_correlation, krippendorff_alpha_interval


@dataclass
class AgreementConfig:
    ratings: str = field(metadata={"help": "ratings JSONL from `sotopia-env rate`", "positional": True})
    episodes: list[str] = field(
        default_factory=list,
        metadata={"help": "judged episodes: JSONL files or benchmark folders (their */episodes.judged.jsonl)"},
    )
    out: str = field(default="runs/agreement", metadata={"help": "folder for agreement.md, the CSVs and the PNGs"})
    dimensions: str | None = field(
        default=None,
        metadata={"help": "dimension set JSON file the ratings use; default: the one the judged episodes record"},
    )
    resamples: int = field(default=2000, metadata={"help": "bootstrap resamples per interval"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})

    def validate(self) -> None:
        if not self.episodes:
            raise config_error(self, "episodes", "name the judged episodes (a file or a benchmark folder)")
        missing = [p for p in [self.ratings, *self.episodes] if not Path(p).exists()]
        if missing:
            raise ValueError(f"{', '.join(missing)}: no such file or folder; check the path")
        if self.resamples < 1:
            raise config_error(self, "resamples", "must be at least 1")


@dataclass
class PolicyAgreement:
    policy: str
    items: int
    people: Estimate
    judge: Estimate  # the judge's mean on the same items
    bias: Estimate  # judge minus people, per item


@dataclass
class DimensionAgreement:
    dimension: str
    low: int
    high: int
    items: int  # items with both a judge score and people's scores
    pearson: Estimate
    spearman: Estimate
    alpha: float  # Krippendorff's alpha, interval scale; NaN with no item rated twice
    alpha_items: int
    alpha_values: int
    raters: int
    policies: list[PolicyAgreement]
    points: list[tuple[float, float, str]] = field(default_factory=list, repr=False)  # judge, people, policy


def judged_files(paths: Sequence[str | Path]) -> list[Path]:
    """Episode files: files as named; a folder gives every episodes.judged.jsonl beneath it (a benchmark run)."""
    found: list[Path] = []
    for path in map(Path, paths):
        found += sorted(path.rglob("episodes.judged.jsonl")) if path.is_dir() else [path]
    if not found:
        raise ValueError(f"no judged episode files in {', '.join(map(str, paths))}; run the benchmark or judge first")
    return found


def load_judged(paths: Sequence[str | Path]) -> dict[Item, Episode]:
    """Judged episodes by (id, seat, policy of the seat): a benchmark's policies share ids. The policy is the
    benchmark's spec for a file in a benchmark folder (as `sotopia-env rate` writes it), else the model the
    episode records for the seat."""
    episodes: dict[Item, Episode] = {}
    for path in judged_files(paths):
        spec = benchmark_policy(path)
        for e in read_episodes(path):
            episodes.update({(e.id, seat, spec or e.agent_models.get(f"agent_{seat}", "")): e for seat in (0, 1)})
    return episodes


def agreement(
    ratings: Sequence[Rating],
    episodes: dict[Item, Episode],
    dims: DimensionSet,
    resamples: int = 2000,
    seed: int = 0,
) -> list[DimensionAgreement]:
    """Per dimension that people rated, in the set's order: the numbers the module docstring lists."""
    rated = {r.dimension for r in ratings if r.kind == "score"}
    out = []
    for dim in (d for d in dims.dimensions if d.name in rated):
        items = people_scores(ratings, dim.name)
        alpha, alpha_items, alpha_values = krippendorff_alpha_interval(
            {"|".join(map(str, k)): v for k, v in items.items()}
        )
        paired = []  # (judge, people mean, policy)
        for (episode_id, seat, policy), scores in sorted(items.items()):
            episode = episodes.get((episode_id, seat, policy))
            judge = (episode.judge_scores.get(f"agent_{seat}", {}) if episode else {}).get(dim.name)
            if judge is not None:
                paired.append((float(judge), float(np.mean(scores)), policy))
        judge_values, people_values = [p[0] for p in paired], [p[1] for p in paired]
        policies = []
        for policy in sorted({p[2] for p in paired}):
            mine = [p for p in paired if p[2] == policy]
            policies.append(
                PolicyAgreement(
                    policy,
                    len(mine),
                    bootstrap_ci([p[1] for p in mine], resamples, seed),
                    bootstrap_ci([p[0] for p in mine], resamples, seed),
                    bootstrap_ci([p[0] - p[1] for p in mine], resamples, seed),
                )
            )
        out.append(
            DimensionAgreement(
                dim.name,
                dim.low,
                dim.high,
                len(paired),
                bootstrap_correlation(judge_values, people_values, "pearson", resamples, seed),
                bootstrap_correlation(judge_values, people_values, "spearman", resamples, seed),
                alpha,
                alpha_items,
                alpha_values,
                len({r.rater for r in ratings if r.kind == "score" and r.dimension == dim.name}),
                policies,
                paired,
            )
        )
    return out


@dataclass
class PairwiseAgreement:
    dimension: str
    policy: str  # the pair as rows store it: policy vs other_policy
    other_policy: str
    comparisons: int
    wins: int  # people chose the policy's agent
    losses: int  # people chose the other's
    ties: int
    judge_agrees: float  # the share of comparisons where the judge's scores order the pair as people did (NaN: none)
    judged: int  # comparisons with judge scores for both episodes


def pairwise_agreement(
    ratings: Sequence[Rating], episodes: dict[Item, Episode], dims: DimensionSet
) -> list[PairwiseAgreement]:
    """Per dimension and pair of policies: people's wins, losses and ties, and how often the judge's scores order
    the two episodes the same way (a judge tie counts as agreeing only with a people's tie)."""
    out = []
    rows = [r for r in ratings if r.kind == "pairwise"]
    for dim in dims.names:
        for policy, other_policy in sorted({(r.policy, r.other_policy) for r in rows if r.dimension == dim}):
            mine = [r for r in rows if r.dimension == dim and (r.policy, r.other_policy) == (policy, other_policy)]
            agree = []
            for r in mine:
                a = episodes.get((r.episode, r.seat, r.policy))
                b = episodes.get((r.other, r.seat, r.other_policy))
                score_a = a.judge_scores.get(r.agent, {}).get(dim) if a else None
                score_b = b.judge_scores.get(r.agent, {}).get(dim) if b else None
                if score_a is not None and score_b is not None:
                    judge = "episode" if score_a > score_b else "other" if score_b > score_a else "tie"
                    agree.append(judge == r.choice)
            out.append(
                PairwiseAgreement(
                    dim,
                    policy,
                    other_policy,
                    len(mine),
                    sum(r.choice == "episode" for r in mine),
                    sum(r.choice == "other" for r in mine),
                    sum(r.choice == "tie" for r in mine),
                    float(np.mean(agree)) if agree else float("nan"),
                    len(agree),
                )
            )
    return out


def choose_dimensions(cfg: AgreementConfig, episodes: dict[Item, Episode]) -> DimensionSet:
    """--dimensions, else the set the judged episodes record (Sotopia-EVAL's when they record none)."""
    if cfg.dimensions:
        return dimension_set(cfg.dimensions)
    recorded = {found.name: found for e in episodes.values() if (found := recorded_dimensions(e.meta)) is not None}
    if len(recorded) > 1:
        raise config_error(
            cfg, "dimensions", f"the episodes were judged on several sets ({', '.join(recorded)}); name one"
        )
    return next(iter(recorded.values())) if recorded else dimension_set(None)


def markdown(
    results: list[DimensionAgreement],
    dims: DimensionSet,
    ratings: Sequence[Rating],
    pairwise: Sequence[PairwiseAgreement] = (),
) -> str:
    raters = sorted({r.rater for r in ratings})
    lines = [
        "# Judge and people",
        "",
        f"{len(raters)} rater(s), dimension set `{dims.name}`. An item is one episode's seat under test; people's "
        "score on it is its raters' mean. Intervals: 95% bootstrap over items.",
        "",
        "## Per policy",
        "",
        "| dimension | policy | items | people | judge (same items) | bias: judge - people |",
        "|---|---|---|---|---|---|",
    ]
    for d in results:
        for p in d.policies:
            lines.append(
                f"| {d.dimension} ({d.low} to {d.high}) | {_code(p.policy)} | {p.items} | {p.people} | {p.judge} | "
                f"{_signed(p.bias)} |"
            )
    lines += [
        "",
        "## Correlation and inter-rater agreement",
        "",
        "| dimension | items | Pearson r | Spearman rho | Krippendorff's alpha (interval) | items rated twice or more |",
        "|---|---|---|---|---|---|",
    ]
    for d in results:
        alpha = "n/a (no item rated by two raters)" if d.alpha_items == 0 else f"{d.alpha:.3f}"
        lines.append(
            f"| {d.dimension} | {d.items} | {_corr(d.pearson)} | {_corr(d.spearman)} | {alpha} | "
            f"{d.alpha_items} ({d.alpha_values} scores) |"
        )
    lines += [
        "",
        "A positive bias means the judge scores a policy higher than people do; compare it across policies (Sotopia-pi: "
        "judges overrate socially trained agents). Scatter plots: scatter_<dimension>.png.",
        "",
    ]
    if pairwise:
        lines += [
            "## Pairwise",
            "",
            "Which agent people found better in two policies' episodes of the same cell, and how often the judge's "
            "scores order the pair the same way.",
            "",
            "| dimension | policy vs other | comparisons | people: policy / other / same | judge agrees |",
            "|---|---|---|---|---|",
        ]
        for w in pairwise:
            agrees = "n/a" if w.judged == 0 else f"{w.judge_agrees:.2f} (of {w.judged})"
            lines.append(
                f"| {w.dimension} | {_code(w.policy)} vs {_code(w.other_policy)} | {w.comparisons} | {w.wins} / {w.losses} / "
                f"{w.ties} | {agrees} |"
            )
        lines.append("")
    return "\n".join(lines)


def _corr(e: Estimate) -> str:
    if e.mean != e.mean:
        return "n/a"
    interval = "" if e.low != e.low else f" [{e.low:.2f}, {e.high:.2f}]"
    return f"{e.mean:.2f}{interval}"


def _signed(e: Estimate) -> str:
    return "n/a" if e.n == 0 else f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def scatter(d: DimensionAgreement, path: Path) -> None:
    """Judge (x) against people's mean (y) per item, one colour per policy, the diagonal where they agree."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for policy in sorted({p[2] for p in d.points}):
        xs = [p[0] for p in d.points if p[2] == policy]
        ys = [p[1] for p in d.points if p[2] == policy]
        ax.scatter(xs, ys, label=policy[:40], alpha=0.7)
    ax.plot([d.low, d.high], [d.low, d.high], color="grey", linewidth=0.8, linestyle="--")
    ax.set_xlim(d.low - 0.5, d.high + 0.5)
    ax.set_ylim(d.low - 0.5, d.high + 0.5)
    ax.set_xlabel("judge")
    ax.set_ylabel("people (mean of raters)")
    ax.set_title(f"{d.dimension}: Pearson {_corr(d.pearson)}")
    if d.points:
        ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_agreement(
    results: list[DimensionAgreement],
    dims: DimensionSet,
    ratings: Sequence[Rating],
    out: Path,
    pairwise: Sequence[PairwiseAgreement] = (),
) -> str:
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(results, dims, ratings, pairwise)
    if pairwise:
        header = ["dimension", "policy", "other_policy", "comparisons", "wins", "losses", "ties", "judge_agrees"]
        rows = [
            [w.dimension, w.policy, w.other_policy, w.comparisons, w.wins, w.losses, w.ties, w.judge_agrees]
            for w in pairwise
        ]
        write_text_atomic(
            out / "pairwise.csv", _csv(header + ["judged"], [r + [w.judged] for r, w in zip(rows, pairwise)])
        )
    write_text_atomic(out / "agreement.md", text)
    rows = [
        [d.dimension, p.policy, p.items, *_triple(p.people), *_triple(p.judge), *_triple(p.bias)]
        for d in results
        for p in d.policies
    ]
    header = ["dimension", "policy", "items", "people", "people_low", "people_high", "judge", "judge_low"]
    header += ["judge_high", "bias", "bias_low", "bias_high"]
    write_text_atomic(out / "agreement.csv", _csv(header, rows))
    write_text_atomic(
        out / "correlation.csv",
        _csv(
            ["dimension", "items", "pearson", "pearson_low", "pearson_high", "spearman", "spearman_low"]
            + ["spearman_high", "alpha_interval", "alpha_items", "alpha_values", "raters"],
            [
                [d.dimension, d.items, *_triple(d.pearson), *_triple(d.spearman), d.alpha, d.alpha_items]
                + [d.alpha_values, d.raters]
                for d in results
            ],
        ),
    )
    for d in results:
        scatter(d, out / f"scatter_{d.dimension}.png")
    return text


def _triple(e: Estimate) -> list[float]:
    return [e.mean, e.low, e.high]


def agreement_command(cfg: AgreementConfig) -> int:
    episodes = load_judged(cfg.episodes)
    dims = choose_dimensions(cfg, episodes)
    ratings = read_ratings(cfg.ratings, dims)
    if not ratings:
        raise ValueError(f"{cfg.ratings}: no ratings yet; rate some episodes with sotopia-env rate")
    unknown = sorted({(r.episode, r.seat, r.policy) for r in ratings if r.kind == "score"} - set(episodes))
    if unknown:
        print(f"warning: {len(unknown)} rated item(s) are not among the judged episodes, e.g. {unknown[0]!r}")
    results = agreement(ratings, episodes, dims, cfg.resamples, cfg.seed)
    pairwise = pairwise_agreement(ratings, episodes, dims)
    print(write_agreement(results, dims, ratings, Path(cfg.out), pairwise))
    print(f"wrote {Path(cfg.out) / 'agreement.md'}, agreement.csv, correlation.csv and {len(results)} scatter plot(s)")
    return 0
