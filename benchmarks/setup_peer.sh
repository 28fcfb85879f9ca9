#!/usr/bin/env bash
# A separate venv with sotopia 0.1.5 for the env-overhead peer (it pins pettingzoo 1.25 and openai<2).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv-peer/bin/python ] || python3 -m venv .venv-peer
.venv-peer/bin/python -m pip --disable-pip-version-check -q install "sotopia==0.1.5" 2>&1 | grep -v "^WARNING: Location" || true
