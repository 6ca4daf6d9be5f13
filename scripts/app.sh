#!/usr/bin/env bash
# Set up (if needed) and serve the pruning dashboard with Voila on the embedded demo models.
#   bash scripts/app.sh            -> http://127.0.0.1:8866/
#   PORT=9000 HOST=0.0.0.0 bash scripts/app.sh   (other machines can reach it: served with a token)
#   PRUNEVIZ_MAX_VISITORS=8 bash scripts/app.sh   (concurrent visitors; default sized to this machine's memory)
#   bash scripts/app.sh lab        -> the same notebooks in JupyterLab
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh app
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8866}"
if [ "${1:-}" = "lab" ]; then
  root=()
  [ "$(id -u)" = 0 ] && root=(--allow-root)  # containers and CI machines often run as root
  exec .venv/bin/jupyter lab --no-browser --ip="$HOST" --port="$PORT" ${root[@]+"${root[@]}"} notebooks/
fi
extra=()
case "$HOST" in
  127.*|localhost|::1) ;;
  *)
    if [ "${PRUNEVIZ_NO_TOKEN:-}" = "1" ]; then
      echo "[pruneviz] WARNING: serving on $HOST without a token (PRUNEVIZ_NO_TOKEN=1): anyone who can reach" \
           "this machine can use the app." >&2
    else
      echo "[pruneviz] WARNING: HOST=$HOST makes the app reachable from other machines; it is served with a" \
           "token: open the URL with ?token=... that the log prints below (PRUNEVIZ_NO_TOKEN=1 turns it off)." >&2
      extra+=(--token)
    fi
    ;;
esac
echo "[pruneviz] serving the dashboard at http://$HOST:$PORT/ (Ctrl+C stops it)"
cd notebooks
exec ../.venv/bin/python -m pruneviz.app.serve dashboard.ipynb --no-browser --port="$PORT" --Voila.ip="$HOST" \
  ${extra[@]+"${extra[@]}"}
