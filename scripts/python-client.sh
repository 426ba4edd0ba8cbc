#!/usr/bin/env bash
# The Python client (clients/python) against the real service: an api with API keys required
# and a worker (debug build: `cargo build --bins --locked` first) on a temporary SQLite file,
# the package installed into a fresh venv as a user would (pip fetches its build backend,
# hatchling, from PyPI), and its unittest suite run against them. The worker needs root, as
# for every sandbox test.
#
# PYTHON picks the interpreter for the venv (default python3, 3.11 or later); CARGO_TARGET_DIR
# as for cargo; NSJAIL_PATH, PYTHON_RUNTIME and NSJAIL_CONFIG as for the worker.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/debug
runtime=${RUNTIME_DIR:-/opt/runbox}
python=${PYTHON:-python3}
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

logs() {
  echo "python-client: api log:" >&2
  tail -n 50 "$dir/api.log" >&2
  echo "python-client: worker log:" >&2
  tail -n 50 "$dir/worker.log" >&2
}

port=$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$dir/jobs.db" RUST_LOG=warn
export NSJAIL_PATH=${NSJAIL_PATH:-$runtime/bin/nsjail} PYTHON_RUNTIME=${PYTHON_RUNTIME:-$runtime/python}
export NSJAIL_CONFIG=${NSJAIL_CONFIG:-$PWD/nsjail.cfg}
key=$("$bin/api" keys create --name python-client 2>/dev/null)
PORT=$port AUTH=required "$bin/api" 2>"$dir/api.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { logs; echo "python-client: the api exited" >&2; exit 1; }
  sleep 0.1
done
METRICS_ADDR=off "$bin/worker" 2>"$dir/worker.log" &
pids+=($!)

"$python" -m venv "$dir/venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/venv/bin/pip" install --quiet ./clients/python

status=0
# Without bytecode files, so the run leaves nothing behind in clients/python/tests.
RUNBOX_URL="http://127.0.0.1:$port" RUNBOX_KEY=$key PYTHONDONTWRITEBYTECODE=1 \
  "$dir/venv/bin/python" -m unittest discover -s clients/python/tests -v || status=$?
if [[ $status -ne 0 ]]; then
  echo "python-client: failures above" >&2
  logs
fi
exit "$status"
