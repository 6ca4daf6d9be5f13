#!/usr/bin/env bash
# Set up (if needed) and serve the pruning dashboard with Voila on the embedded demo model.
#   bash scripts/app.sh            -> http://127.0.0.1:8866/
#   PORT=9000 HOST=0.0.0.0 bash scripts/app.sh
#   bash scripts/app.sh lab        -> the same notebooks in JupyterLab
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app
if [ "${1:-}" = "lab" ]; then
  exec .venv/bin/jupyter lab --no-browser --ip="${HOST:-127.0.0.1}" --port="${PORT:-8888}" notebooks/
fi
echo "[pruneviz] serving the dashboard at http://${HOST:-127.0.0.1}:${PORT:-8866}/ (Ctrl+C stops it)"
cd notebooks
exec ../.venv/bin/voila dashboard.ipynb --no-browser --port="${PORT:-8866}" --Voila.ip="${HOST:-127.0.0.1}"
