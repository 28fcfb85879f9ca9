"""The hard-task benchmark end to end on vLLM, killed and resumed (its own file so that under `--dist loadfile` this
long test is a unit of work of its own; tests/test_benchmark.py has the rest)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_benchmark import SCRIPTED

from benchmarks import BenchmarkConfig, run
from benchmarks.hard_tasks import policy_dir


def test_benchmark_end_to_end_and_resume_after_a_kill_at_concurrency_4_gives_the_same_report(tmp_path, vllm_engine):
    """The embedded model against a scripted partner on two hard scenarios, two repeats per cell (8 episodes,
    played 4 at a time), judged by the embedded model on vLLM. Run B is SIGKILLed after its first episode and
    resumed, so its remaining episodes are played in other batches than run A's; with per-episode seeds its
    report must equal run A's. B judges from a copy of A's judge cache: a hit needs the same transcript (the
    key holds its digest), so equal results still require equal episodes, at no second judge bill."""
    from rewards.judge import Judge

    def config(name: str) -> BenchmarkConfig:
        return BenchmarkConfig(
            policies=["embedded"],
            partner=SCRIPTED,
            scenarios=2,
            pairings=1,
            episodes_per_cell=2,
            max_turns=4,
            max_new_tokens=32,
            concurrency=4,
            resamples=500,
            out=str(tmp_path / name),
            leaderboard=None,
        )

    a = run(config("a"), judge=Judge(vllm_engine, cache_path=tmp_path / "a" / "judge_cache.jsonl"), progress=False)
    pa = a.policies[0]
    assert pa.planned == 8 and pa.judged + len(pa.failures) == 8 and not pa.unplayed
    assert (tmp_path / "a" / "report.md").exists() and (tmp_path / "a" / "dimensions.png").exists()
    assert a.provenance["judge_model"] == vllm_engine.model_name

    cfg_b = config("b")
    episodes_b = policy_dir(Path(cfg_b.out), "embedded") / "episodes.jsonl"
    cmd = [
        str(Path(sys.executable).parent / "sotopia-env"),
        "benchmark",
        "embedded",
        "--partner",
        SCRIPTED,
        "--scenarios",
        "2",
        "--pairings",
        "1",
        "--episodes-per-cell",
        "2",
        "--max-turns",
        "4",
        "--max-new-tokens",
        "32",
        "--concurrency",
        "4",
        "--resamples",
        "500",
        "--out",
        cfg_b.out,
        "--leaderboard",
        "",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while not (episodes_b.exists() and episodes_b.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the benchmark ended before its first episode"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 1 <= episodes_b.read_bytes().count(b"\n") < 8  # killed in the middle of the policy's eight episodes
    shutil.copy(tmp_path / "a" / "judge_cache.jsonl", tmp_path / "b" / "judge_cache.jsonl")
    b = run(cfg_b, judge=Judge(vllm_engine, cache_path=tmp_path / "b" / "judge_cache.jsonl"), progress=False)
    assert b.results_dict() == a.results_dict()
