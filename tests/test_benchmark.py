"""The hard-task policy benchmark: statistics by hand, report files, failures, resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import BenchmarkConfig, Estimate, bootstrap_ci, paired_difference, plan, run, summarize
from benchmarks.hard_tasks import _play, policy_dir, provenance
from benchmarks.report import write_leaderboard, write_report
from benchmarks.stats import group_means
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
    assert group_means({"x": 1.0, "y": 3.0, "z": 10.0}, {"x": "s1", "y": "s1", "z": "s2"}) == {"s1": (2.0, 2), "s2": (10.0, 1)}
    empty = bootstrap_ci([])
    assert empty.n == 0 and str(empty) == "n/a"
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0], level=1.5)


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
            out[key] = episode.model_copy(update={"judge_failures": [f"judge test on agent_{seat_of[key]}: invalid JSON (after 3 attempts)"]})
            continue
        dims = {n: min(BY_NAME[n].low + goals[key], BY_NAME[n].high) for n in NAMES}
        out[key] = episode.model_copy(update={"judge_scores": {f"agent_{seat_of[key]}": {**dims, "overall": overall(dims)}}})
    return out


def test_report_numbers_failures_files_and_leaderboard(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-written-3141")
    specs = [SCRIPTED, "openai:some-model@http://127.0.0.1:9/v1"]
    cfg = BenchmarkConfig(policies=specs, partner=SCRIPTED, scenarios=2, pairings=1, max_turns=4, resamples=500,
                          out=str(tmp_path / "bench"), leaderboard=str(tmp_path / "board.jsonl"))
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
    assert pa.failures == [{"episode": episodes[keys[3]].id, "cell": keys[3], "reason": "judge test on agent_1: invalid JSON (after 3 attempts)"}]
    scenario_1 = cells[0].scenario
    assert pa.scenarios[scenario_1]["goal"] == pytest.approx(5.0) and pa.scenarios[scenario_1]["n"] == 2  # cells 0 and 1
    [cmp] = result.comparisons
    assert cmp.pairs == 3 and cmp.differences["goal"].mean == pytest.approx((3 - 4 + 6 - 6 + 5 - 8) / 3)  # B - A, failure unpaired

    paths = write_report(result, Path(cfg.out))
    for path in paths.values():
        assert path.stat().st_size > 0
    md = paths["markdown"].read_text()
    assert "1 episode(s) could not be judged and are left out of the means" in md and episodes[keys[3]].id in md
    report = json.loads(paths["json"].read_text())
    assert report["provenance"]["judge_model"] == "test-judge" and report["provenance"]["versions"]["torch"]
    assert report["config"]["seed"] == 0 and report["policies"][0]["failures"][0]["cell"] == keys[3]
    rows = paths["dimensions_csv"].read_text().splitlines()
    assert rows[0] == "policy,dimension,mean,ci_low,ci_high,n" and len(rows) == 1 + 2 * (len(NAMES) + 1)

    write_leaderboard(result, Path(cfg.leaderboard))
    write_leaderboard(result, Path(cfg.leaderboard))  # reporting the same run again replaces, not duplicates
    entries = [json.loads(line) for line in Path(cfg.leaderboard).read_text().splitlines()]
    assert [e["policy"] for e in entries] == specs and entries[0]["judge_failures"] == 1
    board = Path(cfg.leaderboard).with_suffix(".md").read_text()
    assert board.index(f"`{specs[0]}`") < board.index(f"`{specs[1]}`")  # ranked by overall: A 6.0 above B 4.0
    for path in [*Path(cfg.out).rglob("*"), Path(cfg.leaderboard)]:
        if path.is_file():
            assert b"sk-test-never-written" not in path.read_bytes(), path


def test_rerun_with_another_protocol_is_refused(tmp_path):
    cfg = BenchmarkConfig(policies=[SCRIPTED], partner=SCRIPTED, scenarios=1, pairings=1, out=str(tmp_path))
    from benchmarks.hard_tasks import _pin_protocol

    _pin_protocol(cfg, tmp_path)
    _pin_protocol(BenchmarkConfig(policies=["embedded"], partner=SCRIPTED, scenarios=1, pairings=1, out=str(tmp_path)), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["policies"] == [SCRIPTED, "embedded"]
    with pytest.raises(ValueError, match="another protocol.*max_turns: 20 -> 6"):
        _pin_protocol(BenchmarkConfig(policies=[SCRIPTED], partner=SCRIPTED, max_turns=6, out=str(tmp_path)), tmp_path)
    with pytest.raises(ValueError, match="repeat"):
        run(BenchmarkConfig(policies=[SCRIPTED, SCRIPTED], out=str(tmp_path / "x")))
    assert "sk-" not in json.dumps(provenance(cfg, "j"))


def test_benchmark_end_to_end_and_resume_after_a_kill_gives_the_same_report(tmp_path, vllm_engine):
    """The embedded model against a scripted partner on one hard scenario, judged by the embedded model on
    vLLM. Run B is SIGKILLed after its first episode, then resumed; its report must equal run A's."""
    from rewards.judge import Judge

    def config(name: str) -> BenchmarkConfig:
        return BenchmarkConfig(policies=["embedded"], partner=SCRIPTED, scenarios=1, pairings=1, max_turns=4,
                               max_new_tokens=32, concurrency=1, resamples=500, out=str(tmp_path / name), leaderboard=None)

    a = run(config("a"), judge=Judge(vllm_engine, cache_path=tmp_path / "a" / "judge_cache.jsonl"), progress=False)
    pa = a.policies[0]
    assert pa.planned == 2 and pa.judged + len(pa.failures) == 2 and not pa.unplayed
    assert (tmp_path / "a" / "report.md").exists() and (tmp_path / "a" / "dimensions.png").exists()
    assert a.provenance["judge_model"] == vllm_engine.model_name

    cfg_b = config("b")
    episodes_b = policy_dir(Path(cfg_b.out), "embedded") / "episodes.jsonl"
    cmd = [str(Path(sys.executable).parent / "sotopia-env"), "benchmark", "embedded", "--partner", SCRIPTED, "--scenarios", "1",
           "--pairings", "1", "--max-turns", "4", "--max-new-tokens", "32", "--concurrency", "1", "--resamples", "500",
           "--out", cfg_b.out, "--leaderboard", ""]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (episodes_b.exists() and episodes_b.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the benchmark ended before its first episode"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert episodes_b.read_bytes().count(b"\n") == 1  # killed in the middle: one of the policy's two episodes
    b = run(cfg_b, judge=Judge(vllm_engine, cache_path=tmp_path / "b" / "judge_cache.jsonl"), progress=False)
    assert b.results_dict() == a.results_dict()
