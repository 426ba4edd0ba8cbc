#!/usr/bin/env bash
# `make bench`: sandbox floor measured on the executor directly, then /execute latency and
# throughput against a real api + worker on a temporary SQLite file.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$dir/jobs.db" PORT=$port RUST_LOG=warn
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

echo "machine: $(nproc) CPUs, $(uname -r), worker concurrency ${WORKER_CONCURRENCY:-$(nproc)}"
./target/release/examples/sandbox_floor

./target/release/api & pids+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
# Metrics recorded as in production, served on a port of the kernel's choosing so nothing
# else on 9091 (a `make run` worker) collides with it.
METRICS_ADDR=127.0.0.1:0 ./target/release/worker & pids+=($!)
./target/release/examples/bench_execute "http://127.0.0.1:$port"

# The queue alone (noop worker: jobs succeed without running), on both stores.
./target/release/examples/bench_queue sqlite
./target/release/examples/bench_queue postgres
