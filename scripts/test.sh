#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: ruff, then pytest (unit, widget, notebook and browser tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app,test
if [ ! -x /usr/bin/chromium ]; then
  echo "[pruneviz] installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check pruneviz tests benchmarks
# two workers (this machine has 2 cores): the browser tests stay together on one (tests/conftest.py)
exec .venv/bin/python -m pytest -n 2 --dist loadgroup --durations=15 "$@"
