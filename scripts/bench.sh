#!/usr/bin/env bash
# `make bench`: the speed targets, each figure beside a floor measured in the same run (the
# sandbox runtime's bare `python3 -I -c pass` and `import pandas`), since the machine is shared
# and noisy. The executor alone (sandbox_floor); then /execute latency, throughput and idle CPU
# against a real api + worker on a temporary SQLite file and on a temporary Postgres database;
# then the queue alone on both stores. A missed target is reported (MISS) and the exit status
# stays 0; a failed job or a service that does not come up stops the bench with an error.
#
# Honours CARGO_TARGET_DIR (default ./target), PYTHON_RUNTIME, BENCH_POSTGRES_URL (an admin URL,
# default postgres://postgres@127.0.0.1:5432/postgres), and passes the worker's settings
# (WORKER_CONCURRENCY, SANDBOX_MODE, ...) through from the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/release
export PYTHON_RUNTIME=${PYTHON_RUNTIME:-/opt/runbox/python} RUST_LOG=warn
admin_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
dir=$(mktemp -d)
pids=()
pg_db=

stop_services() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
drop_pg_db() {
  if [[ -n $pg_db ]]; then
    psql "$admin_url" -qc "DROP DATABASE IF EXISTS \"$pg_db\" WITH (FORCE)" >/dev/null
    pg_db=
  fi
}
cleanup() {
  stop_services
  drop_pg_db || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# bench_store NAME DATABASE_URL: floors first (nothing else of ours running), then an api and a
# worker on that store, loaded by bench_execute, then stopped.
bench_store() {
  local store=$1 url=$2 port api worker
  port=$(free_port)
  echo
  "$bin/examples/bench_execute" floors --out "$dir/floors-$store.json"
  DATABASE_URL=$url PORT=$port "$bin/api" &
  api=$!
  pids+=("$api")
  # The api applies migrations at start; the worker only checks them, so it starts after.
  for _ in $(seq 1 300); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    kill -0 "$api" 2>/dev/null || { echo "bench: the api exited on $store" >&2; exit 1; }
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null || {
    echo "bench: the api did not become ready on $store in 30 s" >&2
    exit 1
  }
  # Metrics recorded as in production, served on a port of the kernel's choosing so nothing
  # else on 9091 (a `make run` worker) collides with it.
  DATABASE_URL=$url METRICS_ADDR=127.0.0.1:0 "$bin/worker" &
  worker=$!
  pids+=("$worker")
  "$bin/examples/bench_execute" load --store "$store" --base "http://127.0.0.1:$port" \
    --floors "$dir/floors-$store.json" --api-pid "$api" --worker-pid "$worker"
  stop_services
}

echo "machine: $(nproc) CPUs, $(uname -r), worker concurrency ${WORKER_CONCURRENCY:-$(nproc)}," \
  "SANDBOX_MODE=${SANDBOX_MODE:-warm (the worker default)}"
# Thousands of cgroups left on a host (by workers killed with SIGKILL, say) slow every process
# on it, the floors included; printed so such a run can be recognised.
if [[ -r /proc/cgroups ]]; then
  echo "host cgroups: $(awk '$1 == "memory" || $1 == "pids" {printf "%s%s %s", sep, $1, $3; sep=", "}' /proc/cgroups)" \
    "(a few dozen is normal; thousands slow the host)"
fi
"$bin/examples/sandbox_floor"

bench_store sqlite "sqlite://$dir/jobs.db"

command -v psql >/dev/null || { echo "bench: psql is needed to create the Postgres database" >&2; exit 1; }
pg_db="runbox_bench_$$_$RANDOM"
psql "$admin_url" -qc "CREATE DATABASE \"$pg_db\"" >/dev/null
bench_store postgres "${admin_url%/*}/$pg_db"
drop_pg_db

# The queue alone (noop worker: jobs succeed without running), on both stores.
echo
"$bin/examples/bench_queue" sqlite
"$bin/examples/bench_queue" postgres
