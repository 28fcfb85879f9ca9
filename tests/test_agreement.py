"""People's ratings against the judge (benchmarks/agreement.py, benchmarks/stats.py, rewards/ratings.py): every
number checked against a value worked by hand or published."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import BenchmarkConfig, plan, summarize
from benchmarks.agreement import agreement, pairwise_agreement
from benchmarks.cli import main
from benchmarks.hard_tasks import add_people
from benchmarks.report import markdown
from benchmarks.stats import bootstrap_correlation, krippendorff_alpha_interval, pearson, ranks, spearman
from rewards.dimensions import SOTOPIA_EVAL
from rewards.ratings import Rating, append_ratings, rated_by, read_ratings
from sotopia_env import Episode, SocialParallelEnv
from sotopia_env.episode import write_jsonl_atomic


def test_krippendorffs_alpha_matches_a_hand_worked_example_and_krippendorffs_published_one():
    # Two raters, three units: values 1,2 | 3,3 | 5,4 (n = 6). D_o = (2 + 0 + 2) / 6 = 2/3; over all six values
    # sum_{i != j} (v_i - v_j)^2 = 2 * 6 * 64 - 2 * 18^2 = 120, so D_e = 120 / 30 = 4; alpha = 1 - (2/3) / 4 = 5/6.
    assert krippendorff_alpha_interval({"a": [1, 2], "b": [3, 3], "c": [5, 4]}) == (pytest.approx(5 / 6), 3, 6)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values;
    # interval alpha = 0.849. Unit 12 has one value and cannot be paired.
    observers = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    units = {str(u): [o[u] for o in observers if o[u] is not None] for u in range(12)}
    alpha, pairable, values = krippendorff_alpha_interval(units)
    assert round(alpha, 3) == 0.849 and (pairable, values) == (11, 40)
    nothing = krippendorff_alpha_interval({"a": [3], "b": [4]})  # no unit rated twice
    assert math.isnan(nothing[0]) and nothing[1:] == (0, 0)


def test_pearson_and_spearman_match_hand_computation_with_ties():
    # x - 3 = [-2, -1, 0, 1, 2], y - 3 = [-1, -2, 1, 0, 2]: sum of products 8, sums of squares 10 and 10 -> r = 0.8.
    assert pearson([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # Ties share their mean rank: x ranks [1, 2.5, 2.5, 4], y ranks [1, 3, 2, 4]; r of the ranks = 4.5 / sqrt(4.5 * 5).
    assert list(ranks([1, 2, 2, 3])) == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(math.sqrt(0.9))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # no spread: no correlation
    perfect = bootstrap_correlation([1, 2, 3, 4], [2, 4, 6, 8], "spearman", resamples=500)
    assert (perfect.mean, perfect.low, perfect.high, perfect.n) == (1.0, 1.0, 1.0, 4)
    with pytest.raises(ValueError, match="pearson or spearman"):
        bootstrap_correlation([1, 2], [1, 2], "kendall")


def episode(episode_id: str, model: str, judge_goal: float) -> Episode:
    env = SocialParallelEnv(max_turns=4, agent_models={"agent_0": model, "agent_1": "partner"})
    env.reset(seed=0, options={"scenario": "neg-used-bike", "characters": ("ben_kowalski", "amara_okafor")})
    env.step({"agent_0": "It is $480."})
    env.step({"agent_1": {"action_type": "leave"}})
    ep = env.episode
    ep.id = episode_id
    ep.judge_scores = {"agent_0": {**dict.fromkeys(SOTOPIA_EVAL.names, 0.0), "goal": judge_goal}}
    return ep


# Items (episode seat 0): people's two scores and the judge's score on goal.
ITEMS = {"e1": ("base", [4, 6], 5.0), "e2": ("base", [2, 2], 3.0), "e3": ("trained", [5, 7], 8.0)}
ITEMS["e4"] = ("trained", [3, 5], 7.0)


def ratings() -> list[Rating]:
    return [
        Rating("score", rater, eid, 0, "goal", "2026-12-05T09:00:00+00:00", policy=policy, score=float(scores[k]))
        for eid, (policy, scores, _) in ITEMS.items()
        for k, rater in enumerate(("r1", "r2"))
    ]


def judged() -> dict[tuple[str, int, str], Episode]:
    return {(eid, 0, policy): episode(eid, policy, judge) for eid, (policy, _, judge) in ITEMS.items()}


def test_agreement_gives_peoples_means_the_judges_bias_per_policy_correlations_and_alpha_as_worked_by_hand():
    [goal] = agreement(ratings(), judged(), SOTOPIA_EVAL, resamples=20_000, seed=1)
    base, trained = goal.policies
    # base: people 5 and 2 (mean 3.5), judge 5 and 3 (mean 4), bias 0 and 1 (mean 0.5; interval [0, 1], since each
    # extreme resample has probability 1/4). trained: people 6 and 4 (5), judge 8 and 7 (7.5), bias 2 and 3 (2.5).
    assert (base.policy, base.items, base.people.mean, base.judge.mean) == ("base", 2, 3.5, 4.0)
    assert (base.bias.mean, base.bias.low, base.bias.high) == (0.5, 0.0, 1.0)
    assert (trained.people.mean, trained.judge.mean, trained.bias.mean) == (5.0, 7.5, 2.5)
    assert (trained.bias.low, trained.bias.high) == (2.0, 3.0)
    # judge [5, 3, 8, 7] vs people [5, 2, 6, 4]: deviations [-.75, -2.75, 2.25, 1.25] and [.75, -2.25, 1.75, -.25];
    # r = 9.25 / sqrt(14.75 * 8.75). Ranks [2, 1, 4, 3] and [3, 1, 4, 2]: rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert goal.pearson.mean == pytest.approx(9.25 / math.sqrt(14.75 * 8.75)) and goal.spearman.mean == 0.8
    assert goal.pearson.low <= goal.pearson.mean <= goal.pearson.high
    # alpha over [4, 6], [2, 2], [5, 7], [3, 5]: D_o = 24 / 8 = 3; D_e = (2 * 8 * 168 - 2 * 34^2) / 56 = 376 / 56;
    # alpha = 1 - 3 * 56 / 376 = 26 / 47.
    assert goal.alpha == pytest.approx(26 / 47) and (goal.alpha_items, goal.alpha_values, goal.raters) == (4, 8, 2)
    assert goal.items == 4 and goal.dimension == "goal"


def test_a_ratings_file_names_a_bad_row_and_a_raters_later_row_replaces_the_earlier(tmp_path):
    path = tmp_path / "ratings.jsonl"
    first = Rating("score", "r1", "e1", 0, "goal", "t0", policy="p", score=3.0)
    changed = Rating("score", "r1", "e1", 0, "goal", "t1", policy="p", score=7.0, note="changed my mind")
    append_ratings(path, [first, changed])
    pair = Rating("pairwise", "r2", "e1", 0, "goal", "t2", policy="p", other="e1", other_policy="q", choice="other")
    append_ratings(path, [pair])
    [score, pair] = read_ratings(path, SOTOPIA_EVAL)
    assert (score.score, score.note) == (7.0, "changed my mind") and pair.choice == "other"
    assert rated_by(path, "r1") == {"e1|0|p"} and rated_by(path, "r2") == {"e1|0|p||e1|0|q"}
    assert rated_by(path, "r3") == set()
    append_ratings(path, [Rating("score", "r1", "e2", 0, "relationship", "t3", score=9.0)])
    with pytest.raises(ValueError, match=r"ratings.jsonl: line 4: relationship: score 9.0 outside -5..5"):
        read_ratings(path, SOTOPIA_EVAL)


def test_the_agreement_command_writes_markdown_csv_and_a_scatter_per_dimension(tmp_path, capsys):
    episodes, rated = tmp_path / "judged.jsonl", tmp_path / "ratings.jsonl"
    write_jsonl_atomic(episodes, judged().values())
    append_ratings(rated, ratings())
    choice = Rating(
        "pairwise", "r1", "e1", 0, "goal", "t", policy="base", other="e3", other_policy="trained", choice="other"
    )
    append_ratings(rated, [choice])
    out = tmp_path / "agreement"
    assert main(["agreement", str(rated), "--episodes", str(episodes), "--out", str(out), "--resamples", "200"]) == 0
    text = (out / "agreement.md").read_text()
    assert text in capsys.readouterr().out
    assert "| goal (0 to 10) | `trained` | 2 | 5.00 [4.00, 6.00] | 7.50 [7.00, 8.00] | +2.50 [+2.00, +3.00] |" in text
    assert "| goal | 4 | 0.81 [" in text and " | 0.553 | 4 (8 scores) |" in text
    rows = (out / "agreement.csv").read_text().splitlines()
    assert rows[0].startswith("dimension,policy,items,people") and rows[1].startswith("goal,base,2,3.5,")
    assert (out / "correlation.csv").read_text().splitlines()[1].startswith("goal,4,0.814")
    assert (out / "scatter_goal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| goal | `base` vs `trained` | 1 | 0 / 1 / 0 | 1.00 (of 1) |" in text
    assert (out / "pairwise.csv").read_text().splitlines()[1] == "goal,base,trained,1,0,1,0,1.0,1"
    assert main(["agreement", str(rated), "--out", str(out)]) == 2  # no --episodes: an error naming the flag


def test_the_benchmark_report_gains_the_peoples_column_when_ratings_are_given(tmp_path):
    cfg = BenchmarkConfig(policies=["embedded"], scenarios=1, pairings=1, resamples=200, out=str(tmp_path / "b"))
    cells = plan(cfg)
    by_key = {}
    for k, cell in enumerate(cells):
        ep = episode(f"ep{k}", "embedded", judge_goal=6.0 + k)
        ep.judge_scores = {f"agent_{cell.seat}": {**dict.fromkeys(SOTOPIA_EVAL.names, 0.0), "goal": 6.0 + k}}
        ep.judge_scores[f"agent_{cell.seat}"]["overall"] = (6.0 + k) / 7
        by_key[cell.key] = ep
    result = summarize(cfg, cells, {"embedded": by_key}, "j")
    assert "People's ratings" not in markdown(result)
    rated = tmp_path / "ratings.jsonl"
    # People rate the first cell's seat under test 4 and 6 (mean 5); a rating of the other seat, or of another
    # policy's episode with the same id (a benchmark's policies share ids), is not this policy's.
    seat = cells[0].seat
    append_ratings(
        rated,
        [Rating("score", r, "ep0", seat, "goal", "t", policy="embedded", score=s) for r, s in (("a", 4), ("b", 6))],
    )
    other_seat = 1 - cells[1].seat
    append_ratings(rated, [Rating("score", "a", "ep1", other_seat, "goal", "t", policy="partner", score=0.0)])
    append_ratings(rated, [Rating("score", "a", "ep0", seat, "goal", "t", policy="another policy", score=10.0)])
    add_people(result, cells, {"embedded": by_key}, str(rated), cfg)
    text = markdown(result)
    assert "## People's ratings" in text and "| `embedded` | 5.00 [5.00, 5.00] / 6.00 |" in text
    assert result.policies[0].people["goal"].n == 1 and result.policies[0].people["believability"].n == 0
    json.dumps(result.to_dict())  # the report's JSON holds the people's estimates too


def test_pairwise_rows_count_peoples_choices_and_how_often_the_judge_orders_the_pair_the_same_way():
    episodes = judged()  # judge goal: e1 (base) 5, e3 (trained) 8, e2 (base) 3, e4 (trained) 7

    def pair(rater: str, a: str, b: str, choice: str) -> Rating:
        return Rating(
            "pairwise", rater, a, 0, "goal", "t", policy="base", other=b, other_policy="trained", choice=choice
        )

    # People: trained better twice (the judge agrees: 8 > 5, 7 > 3), base better once (the judge disagrees), one tie
    # (the judge, which never ties here, disagrees): agreement 2 of 4.
    rows = [pair("r1", "e1", "e3", "other"), pair("r2", "e1", "e3", "other"), pair("r1", "e2", "e4", "episode")]
    rows.append(pair("r2", "e2", "e4", "tie"))
    [goal] = pairwise_agreement(rows, episodes, SOTOPIA_EVAL)
    assert (goal.policy, goal.other_policy, goal.comparisons, goal.wins, goal.losses, goal.ties) == (
        "base",
        "trained",
        4,
        1,
        2,
        1,
    )
    assert (goal.judge_agrees, goal.judged) == (0.5, 4)
