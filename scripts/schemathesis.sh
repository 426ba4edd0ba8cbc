#!/usr/bin/env bash
# The running API against its own OpenAPI description (`make test` runs this): an api with API
# keys required and a worker (debug build) on a temporary SQLite file, fuzzed by schemathesis
# with a key and every check but one (`ignored_auth` sends requests without the key too).
# `positive_data_acceptance` is left out: it expects every schema-valid body to be
# accepted, and a schema cannot say which strings are Python scripts that define `main`
# (those get their documented 400). Everything else must pass: no 500, no undocumented status
# or header, every response matching its schema, every schema-violating request refused.
#
# SCHEMATHESIS_SEED (default fixed, so a failure reproduces) and SCHEMATHESIS_EXAMPLES (per
# operation, default 50) tune the run; CARGO_TARGET_DIR as for cargo.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/debug
runtime=${RUNTIME_DIR:-/opt/runbox}
schemathesis=$runtime/devtools/bin/schemathesis
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$dir/jobs.db" RUST_LOG=warn
export NSJAIL_PATH=${NSJAIL_PATH:-$runtime/bin/nsjail} PYTHON_RUNTIME=${PYTHON_RUNTIME:-$runtime/python}
export NSJAIL_CONFIG=${NSJAIL_CONFIG:-$PWD/nsjail.cfg}
# Generated jobs may ask for long timeouts; the answer that they are still running (202) is
# part of the contract too, and comes after this grace.
key=$("$bin/api" keys create --name schemathesis 2>/dev/null)
PORT=$port QUEUE_GRACE_SECS=1 AUTH=required "$bin/api" 2>"$dir/api.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat "$dir/api.log" >&2; echo "schemathesis: the api exited" >&2; exit 1; }
  sleep 0.1
done
METRICS_ADDR=off "$bin/worker" 2>"$dir/worker.log" &
pids+=($!)

status=0
# From the temporary directory: schemathesis keeps a cache in its working directory.
(cd "$dir" && "$schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $key" \
  --checks all --exclude-checks positive_data_acceptance \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-50}" \
  --seed "${SCHEMATHESIS_SEED:-4529335609023832353625780959231127290}" \
  --no-color) || status=$?
if [[ $status -ne 0 ]]; then
  echo "schemathesis: failures above; api log:" >&2
  tail -n 50 "$dir/api.log" >&2
fi
exit "$status"
