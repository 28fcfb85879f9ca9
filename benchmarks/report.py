"""Writing a benchmark's results: report.{json,md}, dimensions/scenarios/comparisons CSV, two PNG plots,
and the leaderboard that accumulates runs. Every file is written whole to a temporary name and renamed,
so an interrupted write never leaves half a report."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from sotopia_env.jsonio import iter_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic

from .outcomes import BenchmarkResult
from .stats import Estimate


def write_report(result: BenchmarkResult, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out / "report.json",
        "markdown": out / "report.md",
        "dimensions_csv": out / "dimensions.csv",
        "scenarios_csv": out / "scenarios.csv",
        "comparisons_csv": out / "comparisons.csv",
        "dimensions_png": out / "dimensions.png",
        "scenarios_png": out / "scenarios.png",
    }
    write_json_atomic(paths["json"], _clean(result.to_dict()))
    write_text_atomic(paths["markdown"], markdown(result))
    dims = list(result.policies[0].dimensions)
    write_text_atomic(
        paths["dimensions_csv"],
        _csv(
            [
                "policy",
                "dimension",
                "mean",
                "ci_low",
                "ci_high",
                "ci_low_given_scenarios",
                "ci_high_given_scenarios",
                "n",
                "scenarios",
            ],
            [
                [
                    p.spec,
                    d,
                    e.mean,
                    e.low,
                    e.high,
                    p.dimensions_given_scenarios[d].low,
                    p.dimensions_given_scenarios[d].high,
                    e.n,
                    e.clusters,
                ]
                for p in result.policies
                for d, e in p.dimensions.items()
            ],
        ),
    )
    write_text_atomic(
        paths["scenarios_csv"],
        _csv(
            ["policy", "scenario", "overall", "goal", "n"],
            [[p.spec, s, v["overall"], v["goal"], v["n"]] for p in result.policies for s, v in p.scenarios.items()],
        ),
    )
    write_text_atomic(
        paths["comparisons_csv"],
        _csv(
            [
                "policy",
                "baseline",
                "dimension",
                "difference",
                "ci_low",
                "ci_high",
                "ci_low_given_scenarios",
                "ci_high_given_scenarios",
                "pairs",
            ],
            [
                [
                    c.policy,
                    c.baseline,
                    d,
                    e.mean,
                    e.low,
                    e.high,
                    c.differences_given_scenarios[d].low,
                    c.differences_given_scenarios[d].high,
                    e.n,
                ]
                for c in result.comparisons
                for d, e in c.differences.items()
            ],
        ),
    )
    plot_dimensions(result, dims, paths["dimensions_png"])
    plot_scenarios(result, paths["scenarios_png"])
    return paths


def markdown(result: BenchmarkResult) -> str:
    cfg, prov = result.config, result.provenance
    dims = list(result.policies[0].dimensions)
    n_scenarios = prov["cells"]["scenarios"]
    judged = "the policy's agent and the partner's" if cfg.get("judge_partner") else "only the policy's agent"
    header = ["| policy | judged | " + " | ".join(dims) + " |", "|---|---|" + "---|" * len(dims)]
    lines = [
        f"# Benchmark: {cfg['split']} split, partner `{cfg['partner']}`",
        "",
        f"Judge `{prov['judge_model']}` (prompt {prov['judge_prompt_version']}); {result.policies[0].planned} planned episodes per "
        f"policy ({n_scenarios} scenarios x their pairings x 2 seats x {cfg['episodes_per_cell']}); "
        f"{judged} judged. Bootstrap intervals: {cfg['resamples']} resamples, seed {cfg['seed']}.",
        "",
        "## Scores",
        "",
        "Means with 95% intervals for claims across scenarios: a two-stage bootstrap that resamples scenarios, then "
        "episodes within each chosen scenario." + _few_scenarios(n_scenarios),
        "",
        *header,
    ]
    for p in result.policies:
        lines.append(
            f"| {_code(p.spec)} | {p.judged}/{p.planned} | " + " | ".join(str(p.dimensions[d]) for d in dims) + " |"
        )
    lines += [
        "",
        f"### Conditional on these {n_scenarios} scenarios",
        "",
        "The same means with 95% intervals over episodes alone: how precisely this run measured each policy on exactly "
        "this scenario set, not how it would fare on other scenarios.",
        "",
        *header,
    ]
    for p in result.policies:
        lines.append(
            f"| {_code(p.spec)} | {p.judged}/{p.planned} | "
            + " | ".join(str(p.dimensions_given_scenarios[d]) for d in dims)
            + " |"
        )
    if any(p.partner for p in result.policies):
        lines += [
            "",
            "## The partner's scores",
            "",
            "The partner's agent in each policy's episodes (two-stage intervals as above).",
            "",
            "| policy | " + " | ".join(dims) + " |",
            "|---|" + "---|" * len(dims),
        ]
        for p in result.policies:
            lines.append(
                f"| {_code(p.spec)} | " + " | ".join(str(p.partner[d]) if p.partner else "n/a" for d in dims) + " |"
            )
    rated = [d for d in dims if any(d in p.people and p.people[d].n for p in result.policies)]
    if rated:
        lines += [
            "",
            "## People's ratings",
            "",
            "People's mean (95% bootstrap interval over the rated episodes) beside the judge's mean on the same episodes; "
            "`sotopia-env agreement` gives correlations, bias intervals and inter-rater agreement.",
            "",
            "| policy | " + " | ".join(f"{d}: people / judge" for d in rated) + " |",
            "|---|" + "---|" * len(rated),
        ]
        for p in result.policies:
            cells = [
                f"{p.people[d]} / {p.people_judge[d].mean:.2f}" if d in p.people and p.people[d].n else "n/a"
                for d in rated
            ]
            lines.append(f"| {_code(p.spec)} | " + " | ".join(cells) + " |")
    if result.comparisons:
        pair_header = ["| policy | pairs | " + " | ".join(dims) + " |", "|---|---|" + "---|" * len(dims)]
        lines += [
            "",
            f"## Paired differences against `{result.comparisons[0].baseline}`",
            "",
            "Paired by scenario, pairing, seat and repeat; an interval that excludes 0 is a difference. Intervals resample "
            "scenarios, then pairs within each chosen scenario.",
            "",
            *pair_header,
        ]
        for c in result.comparisons:
            lines.append(
                f"| {_code(c.policy)} | {c.pairs} | " + " | ".join(_signed(c.differences[d]) for d in dims) + " |"
            )
        lines += [
            "",
            f"### Conditional on these {n_scenarios} scenarios",
            "",
            "The same differences with intervals over pairs alone.",
            "",
            *pair_header,
        ]
        for c in result.comparisons:
            lines.append(
                f"| {_code(c.policy)} | {c.pairs} | "
                + " | ".join(_signed(c.differences_given_scenarios[d]) for d in dims)
                + " |"
            )
    lines += ["", "## Judge failures", ""]
    failures = [(p.spec, f) for p in result.policies for f in p.failures]
    if failures:
        lines.append(f"{len(failures)} episode(s) could not be judged and are left out of the means above:")
        lines += [""] + [f"- `{spec}`: `{f['episode']}`: {f['reason']}" for spec, f in failures]
    else:
        lines.append("None: every played episode was judged.")
    unplayed = sum(len(p.unplayed) for p in result.policies)
    if unplayed:
        lines += ["", f"{unplayed} planned episode(s) have not been played yet: rerun the same command to finish them."]
    lines += [
        "",
        "## Per scenario (overall / goal)",
        "",
        "| scenario | " + " | ".join(_code(p.spec) for p in result.policies) + " |",
        "|---|" + "---|" * len(result.policies),
    ]
    for sid in sorted({s for p in result.policies for s in p.scenarios}):
        cells = [
            f"{p.scenarios[sid]['overall']:.2f} / {p.scenarios[sid]['goal']:.2f}" if sid in p.scenarios else "n/a"
            for p in result.policies
        ]
        lines.append(f"| {_escape(sid)} | " + " | ".join(cells) + " |")
    lines += ["", "## Reproduce", "", "```", _command(cfg), "```", "", "```json", json.dumps(prov, indent=1), "```", ""]
    return "\n".join(lines)


def _few_scenarios(n: int) -> str:
    if n >= 5:
        return ""
    return (
        f" With only {n} scenario(s) the first stage has little to resample: these intervals say little about other "
        "scenarios; run more scenarios for that claim."
    )


def _escape(text: str) -> str:
    """A table cell's text: an unescaped `|` would end the cell (policy specs such as `scripted:a|b` hold one).
    Only for table cells: elsewhere markdown shows the backslash."""
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_escape(text)}`"


def _command(cfg: dict[str, Any]) -> str:
    parts = [
        "sotopia-env benchmark",
        *(_quote(p) for p in cfg["policies"]),
        "--partner",
        _quote(cfg["partner"]),
        "--judge",
        _quote(cfg["judge"]),
        "--split",
        cfg["split"],
    ]
    for flag in ("library", "scenarios", "pairings"):
        if cfg[flag] is not None:
            parts += [f"--{flag}", str(cfg[flag])]
    for flag in ("episodes_per_cell", "max_turns", "max_new_tokens", "temperature", "top_p", "seed", "resamples"):
        parts += [f"--{flag.replace('_', '-')}", str(cfg[flag])]
    if cfg.get("judge_partner"):
        parts.append("--judge-partner")
    return " ".join(parts)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def _signed(e: Estimate) -> str:
    return "n/a" if e.n == 0 else f"{e.mean:+.2f} [{e.low:+.2f}, {e.high:+.2f}]"


def plot_dimensions(result: BenchmarkResult, dims: list[str], path: Path) -> None:
    """Grouped bars: one group per dimension, one bar per policy, 95% interval as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(dims)), 4.5))
    width = 0.8 / len(result.policies)
    x = np.arange(len(dims))
    for i, p in enumerate(result.policies):
        est = [p.dimensions[d] for d in dims]
        means = np.array([e.mean for e in est])
        err = np.array([[e.mean - e.low for e in est], [e.high - e.mean for e in est]])
        ax.bar(
            x + (i - (len(result.policies) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=np.nan_to_num(err),
            capsize=3,
            label=p.spec[:40],
        )
    ax.set_xticks(x, [d.replace("_and_material_benefits", "") for d in dims], rotation=20)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("judge score (95% CI)")
    ax.set_title(f"{result.config['split']} split vs {result.config['partner']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save_figure(fig, path)


def plot_scenarios(result: BenchmarkResult, path: Path) -> None:
    """Heat map of the overall score: policies x scenarios."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scenarios = sorted({s for p in result.policies for s in p.scenarios})
    grid = np.array(
        [[p.scenarios[s]["overall"] if s in p.scenarios else np.nan for s in scenarios] for p in result.policies]
    )
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(scenarios) + 3), 1.0 + 0.6 * len(result.policies)))
    image = ax.imshow(grid if grid.size else np.zeros((1, 1)), aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=70, fontsize=7)
    ax.set_yticks(range(len(result.policies)), [p.spec[:40] for p in result.policies], fontsize=8)
    fig.colorbar(image, ax=ax, label="overall")
    ax.set_title("overall score per scenario")
    fig.tight_layout()
    _save_figure(fig, path)


def write_leaderboard(result: BenchmarkResult, path: Path) -> None:
    """One JSONL entry per (protocol, policy), replaced when the same run is reported again; and a
    leaderboard.md beside it ranking the entries of each protocol by overall score."""
    prov = result.provenance
    entries = {(e["protocol_sha256"], e["policy"], e["out"]): e for e in iter_jsonl(path)}
    for p in result.policies:
        overall = p.dimensions["overall"]
        goal = p.dimensions.get("goal", Estimate(float("nan"), float("nan"), float("nan"), 0))  # a set without goal
        entries[(prov["protocol_sha256"], p.spec, result.config["out"])] = {
            "policy": p.spec,
            "overall": overall.mean,
            "overall_ci": [overall.low, overall.high],
            "goal": goal.mean,
            "goal_ci": [goal.low, goal.high],
            "judged": p.judged,
            "planned": p.planned,
            "judge_failures": len(p.failures),
            "split": result.config["split"],
            "scenarios": prov["cells"]["scenarios"],
            "partner": result.config["partner"],
            "judge_model": prov["judge_model"],
            "protocol_sha256": prov["protocol_sha256"],
            "out": result.config["out"],
            "date": prov["date"],
        }
    write_jsonl_atomic(path, (_clean(e) for e in entries.values()))
    lines = [
        "# Leaderboard",
        "",
        "Entries with the same protocol (split, partner, judge, sampling, seeds and the cells played: scenarios, "
        "pairings, seats, repeats) are comparable. Intervals resample scenarios, then episodes within them.",
        "",
    ]
    for protocol in sorted({e["protocol_sha256"] for e in entries.values()}):
        rows = sorted(
            (e for e in entries.values() if e["protocol_sha256"] == protocol), key=lambda e: -_num(e["overall"])
        )
        first = rows[0]
        size = (
            f", {first['scenarios']} scenarios, {first['planned']} episodes per policy"
            if first.get("scenarios")
            else ""
        )
        lines += [
            f"## protocol {protocol}: {first['split']} split{size}, partner `{first['partner']}`, judge `{first['judge_model']}`",
            "",
            "| rank | policy | overall (95% CI) | goal (95% CI) | judged | date |",
            "|---|---|---|---|---|---|",
        ]
        for rank, e in enumerate(rows, 1):
            lines.append(
                f"| {rank} | {_code(e['policy'])} | {_num(e['overall']):.2f} [{_num(e['overall_ci'][0]):.2f}, {_num(e['overall_ci'][1]):.2f}] | "
                f"{_num(e['goal']):.2f} [{_num(e['goal_ci'][0]):.2f}, {_num(e['goal_ci'][1]):.2f}] | {e['judged']}/{e['planned']} | {e['date']} |"
            )
        lines.append("")
    write_text_atomic(path.with_suffix(".md"), "\n".join(lines))


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _clean(value: Any) -> Any:
    """NaN (a mean over no episodes) becomes null: the files stay strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _save_figure(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
