#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Exit 5 (pytest collected no tests) counts as failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --vllm || exit 1
bash scripts/install_browser.sh || exit 1  # headless chromium for tests/test_viewer.py
.venv/bin/python -m ruff check . || exit 1
.venv/bin/python -m ruff format --check . || exit 1
# Two worker processes (pytest-xdist), one thread each, a test file per unit of work; tests/conftest.py starts the
# longest files first.
# Pass -n 0 to run in this process alone.
.venv/bin/python -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder "$@"
status=$?
if [ "$status" = 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit "$status"
