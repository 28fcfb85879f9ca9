#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the viewer's browser tests (tests/test_viewer.py), from Debian's
# packages. Installs only what is missing, so a rerun is instant; needs root (or sudo) the first time.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if ! command -v sudo >/dev/null 2>&1; then
    echo "install_browser.sh: chromium/chromedriver are missing and this is not root; run as root:" \
      "apt-get install -y chromium chromium-driver" >&2
    exit 1
  fi
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium chromium-driver
