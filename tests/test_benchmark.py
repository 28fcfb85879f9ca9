"""The hard-task policy benchmark: statistics by hand, report files, failures, resume after a kill."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import BenchmarkConfig, Estimate, bootstrap_ci, paired_difference, plan, run, summarize
from benchmarks.hard_tasks import _pin_protocol, _play
from benchmarks.report import markdown, write_leaderboard, write_report
from benchmarks.stats import clustered_bootstrap_ci, group_means
from rewards.dimensions import NAMES

SCRIPTED = "scripted:Hello there.|What would you accept?|Let us settle this fairly."


def test_bootstrap_interval_and_paired_difference_match_hand_computation():
    assert bootstrap_ci([2.0, 2.0, 2.0]) == Estimate(2.0, 2.0, 2.0, 3)
    # [0, 1]: resample means are 0, 0.5, 1 with probability 1/4, 1/2, 1/4; both 2.5% tails sit on 0 and 1.
    est = bootstrap_ci([0.0, 1.0], resamples=20_000, seed=1)
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.0, 1.0, 2)
    # [1, 0, 3]: mean 4/3; of the 27 equally likely resamples one has mean 0 and one mean 3 (1/27 > 2.5%).
    est = bootstrap_ci([1.0, 0.0, 3.0], resamples=20_000, seed=2)
    assert est.mean == pytest.approx(4 / 3) and (est.low, est.high) == (0.0, 3.0)
    # Paired: only shared keys count; differences 1, 0, 3 -> the same numbers as above.
    diff = paired_difference({"a": 5, "b": 7, "c": 9}, {"a": 4, "b": 7, "c": 6, "d": 1}, resamples=20_000, seed=2)
    assert diff.n == 3 and diff.mean == pytest.approx(4 / 3) and (diff.low, diff.high) == (0.0, 3.0)
    assert group_means({"x": 1.0, "y": 3.0, "z": 10.0}, {"x": "s1", "y": "s1", "z": "s2"}) == {
        "s1": (2.0, 2),
        "s2": (10.0, 1),
    }
    empty = bootstrap_ci([])
    assert empty.n == 0 and str(empty) == "n/a"
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)


def test_clustered_interval_resamples_scenarios_then_episodes_as_computed_by_hand():
    # Scenarios s1 = [0, 2], s2 = [4]; pooled mean 2. Stage one draws (s1, s1) with probability 1/4: four
    # episodes from {0, 2}, mean B/2 with B ~ Binomial(4, 1/2), so P(mean 0) = 1/64 (< 2.5%) and P(0.5) = 4/64:
    # the low end is 0.5. Stage one draws (s2, s2) with probability 1/4 (> 2.5%), mean 4: the high end is 4.
    assert clustered_bootstrap_ci({"s1": [0.0, 2.0], "s2": [4.0]}, 20_000, seed=3) == Estimate(2.0, 0.5, 4.0, 3, 2)
    # Over episodes alone the same values give [0, 4]: one of 27 resamples has mean 0 (1/27 > 2.5%).
    assert bootstrap_ci([0.0, 2.0, 4.0], 20_000, seed=3) == Estimate(2.0, 0.0, 4.0, 3)
    # Two scenarios with no spread inside: scenario resampling gives means 0, 0.5, 1 (1/4, 1/2, 1/4) -> [0, 1];
    # episode resampling (8 values) reaches 0 only with probability 1/256 and 1/8 cumulatively at 3.5% -> [1/8, 7/8].
    assert clustered_bootstrap_ci({"s1": [0.0] * 4, "s2": [1.0] * 4}, 20_000, seed=4) == Estimate(0.5, 0.0, 1.0, 8, 2)
    assert bootstrap_ci([0.0] * 4 + [1.0] * 4, 20_000, seed=4) == Estimate(0.5, 0.125, 0.875, 8)
    # Paired differences 2-2=0, 4-2=2 (scenario s1) and 5-1=4 (s2): the first case again; key "d" is unpaired.
    a, b = {"x": 2.0, "y": 4.0, "z": 5.0, "d": 9.0}, {"x": 2.0, "y": 2.0, "z": 1.0}
    cluster_of = {"x": "s1", "y": "s1", "z": "s2", "d": "s2"}
    assert paired_difference(a, b, 20_000, seed=3, cluster_of=cluster_of) == Estimate(2.0, 0.5, 4.0, 3, 2)
    empty = clustered_bootstrap_ci({"s1": []})  # a scenario whose episodes all failed counts as no scenario
    assert (empty.n, empty.clusters, str(empty)) == (0, 0, "n/a")
    with pytest.raises(ValueError, match="resamples"):
        clustered_bootstrap_ci({"s1": [1.0]}, resamples=0)


def test_plan_covers_scenarios_pairings_both_seats_and_repeats():
    cells = plan(BenchmarkConfig(scenarios=2, pairings=3, episodes_per_cell=2))
    assert len(cells) == 2 * 3 * 2 * 2 and len({c.key for c in cells}) == len(cells)
    assert {c.seat for c in cells} == {0, 1} and {c.repeat for c in cells} == {0, 1}
    assert len(plan(BenchmarkConfig())) == 26 * 10 * 2  # the default: the whole hard split
    with pytest.raises(ValueError, match="unknown split"):
        plan(BenchmarkConfig(split="nope"))


def scored(episodes: dict, seat_of: dict, goals: dict) -> dict:
    """Judge scores assigned by hand (test data): each dimension = its low end + the goal, overall their mean."""
    from rewards.dimensions import BY_NAME, overall

    out = {}
    for key, episode in episodes.items():
        if goals.get(key) is None:  # an episode the judge could not score
            out[key] = episode.model_copy(
                update={"judge_failures": [f"judge test on agent_{seat_of[key]}: invalid JSON (after 3 attempts)"]}
            )
            continue
        dims = {n: min(BY_NAME[n].low + goals[key], BY_NAME[n].high) for n in NAMES}
        out[key] = episode.model_copy(
            update={"judge_scores": {f"agent_{seat_of[key]}": {**dims, "overall": overall(dims)}}}
        )
    return out


def table_widths(markdown: str) -> list[set[int]]:
    """Per markdown table, the set of its rows' cell counts (one count when no cell text breaks a row)."""
    tables, current = [], None
    for line in markdown.splitlines():
        if line.startswith("|"):
            current = current if current is not None else set()
            current.add(len(re.split(r"(?<!\\)\|", line.strip())) - 2)
        elif current is not None:
            tables.append(current)
            current = None
    return tables + ([current] if current is not None else [])


def test_report_numbers_intervals_failures_files_and_leaderboard(tmp_path):
    specs = [SCRIPTED, "openai:some-model@http://127.0.0.1:9/v1"]
    cfg = BenchmarkConfig(
        policies=specs,
        partner=SCRIPTED,
        scenarios=2,
        pairings=1,
        max_turns=4,
        resamples=20_000,
        out=str(tmp_path / "bench"),
        leaderboard=str(tmp_path / "board.jsonl"),
    )
    cells = plan(cfg)
    assert len(cells) == 4
    episodes = _play(cfg, SCRIPTED, cells, Path(cfg.out), progress=False)  # real scripted episodes
    seat_of = {c.key: c.seat for c in cells}
    keys = [c.key for c in cells]
    a = scored(episodes, seat_of, dict(zip(keys, [4, 6, 8, None])))  # policy A: one judge failure
    b = scored(episodes, seat_of, dict(zip(keys, [3, 6, 5, 2])))
    result = summarize(cfg, cells, {specs[0]: a, specs[1]: b}, judge_model="test-judge")
    pa, pb = result.policies
    assert (pa.planned, pa.judged, pb.judged) == (4, 3, 4)
    assert pa.dimensions["goal"].mean == pytest.approx(6.0) and pa.dimensions["goal"].n == 3  # (4 + 6 + 8) / 3
    assert pa.dimensions["secret"].mean == pytest.approx(-10 + 6.0)
    assert pa.failures == [
        {
            "episode": episodes[keys[3]].id,
            "cell": keys[3],
            "reason": "judge test on agent_1: invalid JSON (after 3 attempts)",
        }
    ]
    scenario_1 = cells[0].scenario
    assert (
        pa.scenarios[scenario_1]["goal"] == pytest.approx(5.0) and pa.scenarios[scenario_1]["n"] == 2
    )  # cells 0 and 1
    # Goals by scenario: [4, 6] and [8]: the hand-computed case of the clustered test shifted by 4 (see there).
    assert pa.dimensions["goal"] == Estimate(6.0, 4.5, 8.0, 3, 2)
    assert pa.dimensions_given_scenarios["goal"] == Estimate(6.0, 4.0, 8.0, 3)
    [cmp] = result.comparisons
    # B - A by cell: -1, 0 (scenario 1) and -3 (scenario 2); the failure is unpaired. Clustered: P(-3) = 1/4 makes
    # -3 the low end; the high end needs four draws of 0 from scenario 1 (1/64 < 2.5%), so it is the next value,
    # -1/4 (4/64). Over pairs alone: one of 27 resamples has mean 0 (> 2.5%): [-3, 0].
    assert cmp.pairs == 3 and cmp.differences["goal"].mean == pytest.approx(-4 / 3)
    assert (cmp.differences["goal"].low, cmp.differences["goal"].high, cmp.differences["goal"].clusters) == (
        -3.0,
        -0.25,
        2,
    )
    assert (cmp.differences_given_scenarios["goal"].low, cmp.differences_given_scenarios["goal"].high) == (-3.0, 0.0)

    paths = write_report(result, Path(cfg.out))
    for path in paths.values():
        assert path.stat().st_size > 0
    md = paths["markdown"].read_text()
    assert "1 episode(s) could not be judged and are left out of the means" in md and episodes[keys[3]].id in md
    assert (
        "two-stage bootstrap that resamples scenarios, then episodes" in md
        and "### Conditional on these 2 scenarios" in md
    )
    assert "| 6.00 [4.50, 8.00] |" in md and "| 6.00 [4.00, 8.00] |" in md and "-1.33 [-3.00, -0.25]" in md
    assert all(len(widths) == 1 for widths in table_widths(md)), table_widths(md)  # `|` in the scripted spec is escaped
    report = json.loads(paths["json"].read_text())
    assert report["provenance"]["judge_model"] == "test-judge" and report["provenance"]["versions"]["torch"]
    assert report["config"]["seed"] == 0 and report["policies"][0]["failures"][0]["cell"] == keys[3]
    assert (
        "scenarios resampled" in report["intervals"]["dimensions"]
        and "conditional" in report["intervals"]["dimensions_given_scenarios"]
    )
    assert (
        report["policies"][0]["dimensions"]["goal"]["low"] == 4.5
        and report["policies"][0]["dimensions_given_scenarios"]["goal"]["low"] == 4.0
    )
    rows = paths["dimensions_csv"].read_text().splitlines()
    assert rows[0] == "policy,dimension,mean,ci_low,ci_high,ci_low_given_scenarios,ci_high_given_scenarios,n,scenarios"
    assert len(rows) == 1 + 2 * (len(NAMES) + 1) and f"{SCRIPTED},goal,6.0,4.5,8.0,4.0,8.0,3,2" in rows

    write_leaderboard(result, Path(cfg.leaderboard))
    write_leaderboard(result, Path(cfg.leaderboard))  # reporting the same run again replaces, not duplicates
    entries = [json.loads(line) for line in Path(cfg.leaderboard).read_text().splitlines()]
    assert [e["policy"] for e in entries] == specs and entries[0]["judge_failures"] == 1
    board = Path(cfg.leaderboard).with_suffix(".md").read_text()
    escaped = SCRIPTED.replace("|", "\\|")
    assert board.index(f"| `{escaped}` |") < board.index(f"| `{specs[1]}` |")  # ranked by overall: A 6.0 above B 4.0
    assert all(len(widths) == 1 for widths in table_widths(board)), table_widths(board)


def test_partner_scores_are_reported_only_when_the_partner_is_judged(tmp_path):
    cfg = BenchmarkConfig(
        policies=[SCRIPTED],
        partner=SCRIPTED,
        scenarios=2,
        pairings=1,
        max_turns=2,
        resamples=200,
        out=str(tmp_path),
        judge_partner=True,
    )
    cells = plan(cfg)
    episodes = _play(cfg, SCRIPTED, cells, tmp_path, progress=False)
    own = scored(episodes, {c.key: c.seat for c in cells}, {c.key: 5 for c in cells})
    other = scored(
        episodes, {c.key: 1 - c.seat for c in cells}, {c.key: goal for c, goal in zip(cells, [1, 2, 3, None])}
    )
    both = {
        k: e.model_copy(update={"judge_scores": {**e.judge_scores, **other[k].judge_scores}}) for k, e in own.items()
    }
    [policy] = summarize(cfg, cells, {SCRIPTED: both}, "j").policies
    assert policy.dimensions["goal"].mean == 5.0 and (policy.partner["goal"].mean, policy.partner["goal"].n) == (2.0, 3)
    assert "## The partner's scores" in markdown(summarize(cfg, cells, {SCRIPTED: both}, "j"))
    cfg.judge_partner = False
    [policy] = summarize(cfg, cells, {SCRIPTED: both}, "j").policies
    assert policy.partner == {}


def test_rerun_with_another_protocol_is_refused_unless_resume_anyway(tmp_path, capsys):
    cfg = BenchmarkConfig(
        policies=[SCRIPTED], partner=SCRIPTED, scenarios=1, pairings=1, max_turns=2, out=str(tmp_path)
    )
    _pin_protocol(cfg, tmp_path, plan(cfg))
    _play(cfg, SCRIPTED, plan(cfg), tmp_path, progress=False)  # what the first run played under that protocol
    more = BenchmarkConfig(
        policies=["embedded"], partner=SCRIPTED, scenarios=1, pairings=1, max_turns=2, out=str(tmp_path)
    )
    _pin_protocol(more, tmp_path, plan(more))  # adding a policy keeps the protocol
    assert json.loads((tmp_path / "config.json").read_text())["policies"] == [SCRIPTED, "embedded"]
    other = BenchmarkConfig(policies=[SCRIPTED], partner=SCRIPTED, scenarios=1, pairings=1, out=str(tmp_path))
    with pytest.raises(
        ValueError, match=r"other settings \(max_turns: 2 -> 20; recorded in .*config\.json\); use a new --out"
    ):
        _pin_protocol(other, tmp_path, plan(other))
    other.resume_anyway = True  # the check every resumable command makes, with the same override
    _pin_protocol(other, tmp_path, plan(other))
    assert (
        json.loads((tmp_path / "config.json").read_text())["max_turns"] == 20 and "warning: " in capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="repeat"):
        run(BenchmarkConfig(policies=[SCRIPTED, SCRIPTED], out=str(tmp_path / "x")))


class CountingEngine:
    """The embedded model, recording each conversation the judge sends it: the judge's bill."""

    def __init__(self, engine) -> None:
        self.engine, self.model_name, self.asked = engine, engine.model_name, []

    def generate(self, conversations, params):
        self.asked += conversations
        return self.engine.generate(conversations, params)


def one_token_judge(engine: CountingEngine, out: Path):
    """A real judge that can afford one token per answer: every answer is invalid, every request is counted."""
    from rewards.judge import Judge

    return Judge(engine, cache_path=out / "judge_cache.jsonl", max_attempts=1, max_new_tokens=1)


def test_a_rerun_with_other_cells_is_refused_and_runs_of_different_size_are_ranked_apart(tmp_path, transformers_engine):
    board = tmp_path / "board.jsonl"

    def config(out: str, scenarios: int, pairings: int) -> BenchmarkConfig:
        return BenchmarkConfig(
            policies=[SCRIPTED],
            partner=SCRIPTED,
            scenarios=scenarios,
            pairings=pairings,
            max_turns=2,
            out=str(tmp_path / out),
            leaderboard=str(board),
        )

    engine = CountingEngine(transformers_engine)
    small = run(config("a", 1, 1), judge=one_token_judge(engine, tmp_path / "a"), progress=False)
    large = run(config("b", 2, 1), judge=one_token_judge(engine, tmp_path / "b"), progress=False)
    assert small.provenance["protocol_sha256"] != large.provenance["protocol_sha256"]
    assert Path(board).with_suffix(".md").read_text().count("## protocol ") == 2  # never ranked together
    assert small.provenance["cells"] == {"scenarios": 1, "pairings": 1, "seats": 2, "repeats": 1, "episodes": 2}
    assert large.provenance["cells"]["episodes"] == 4

    [cell] = {(c.scenario, c.characters) for c in plan(config("a", 1, 1))}
    pinned = json.loads((tmp_path / "a" / "config.json").read_text())["cells"]
    assert pinned == {"scenarios": [cell[0]], "pairings": {cell[0]: [list(cell[1])]}, "seats": [0, 1], "repeats": 1}
    with pytest.raises(
        ValueError, match=r"other settings \(cells.scenarios: 1 -> 2 \(removed none, added \S+\); recorded in"
    ):
        run(config("a", 2, 1), judge=one_token_judge(engine, tmp_path / "a"), progress=False)
    with pytest.raises(
        ValueError,
        match=rf"other settings \(cells.pairings of {cell[0]}: \[\[[^]]+\]\] -> \[\[[^]]+\], \[[^]]+\]\]; recorded",
    ):
        run(config("a", 1, 2), judge=one_token_judge(engine, tmp_path / "a"), progress=False)


def test_the_benchmark_judges_only_the_seat_under_test_unless_the_partner_is_asked_for(tmp_path, transformers_engine):
    cfg = BenchmarkConfig(
        policies=[SCRIPTED],
        partner=SCRIPTED,
        scenarios=2,
        pairings=1,
        max_turns=2,
        out=str(tmp_path / "a"),
        leaderboard=None,
    )
    engine = CountingEngine(transformers_engine)
    [policy] = run(cfg, judge=one_token_judge(engine, tmp_path / "a"), progress=False).policies
    seats = [c.seat for c in plan(cfg)]
    assert len(engine.asked) == 4  # one judge call per episode, not two
    assert [f["reason"].split(": ")[0] for f in policy.failures] == [
        f"judge {engine.model_name} on agent_{s}" for s in seats
    ]
    assert policy.partner == {}

    cfg_partner = BenchmarkConfig(**{**vars(cfg), "out": str(tmp_path / "b"), "judge_partner": True})
    [policy] = run(cfg_partner, judge=one_token_judge(engine, tmp_path / "b"), progress=False).policies
    assert len(engine.asked) == 4 + 8
    assert set(policy.partner) == set(policy.dimensions) and policy.partner["goal"].n == 0  # asked, judged, none valid
