#!/usr/bin/env bash
# Starts the API and one worker in this terminal, logs interleaved; Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap stop INT TERM EXIT

./target/release/api &
pids+=($!)
# The API applies migrations at start; workers only check them, so start the worker once
# the API answers.
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:${PORT:-8080}/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "api exited" >&2; exit 1; fi
  sleep 0.1
done
./target/release/worker &
pids+=($!)
echo "runbox: api on http://127.0.0.1:${PORT:-8080}, one worker; Ctrl-C to stop"
wait -n
