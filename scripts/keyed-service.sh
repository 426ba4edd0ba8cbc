# Sourced by the scripts that test the running service from outside (schemathesis.sh,
# python-client.sh): a debug `api` with API keys required and one `worker`, on a temporary
# SQLite file and a free port, stopped (and the directory removed) on exit.
#
# Before sourcing, set `name` (for the key and for messages) and, optionally, `api_env`, an
# array of VAR=value settings for the api alone. Afterwards: `$port`, `$key` (an API key),
# `$dir` (the temporary directory) and `service_logs` (prints the end of both logs).
# CARGO_TARGET_DIR as for cargo; NSJAIL_PATH, PYTHON_RUNTIME and NSJAIL_CONFIG as for the
# worker.

bin=${CARGO_TARGET_DIR:-target}/debug
runtime=${RUNTIME_DIR:-/opt/runbox}
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

service_logs() {
  echo "$name: api log:" >&2
  tail -n 50 "$dir/api.log" >&2
  echo "$name: worker log:" >&2
  tail -n 50 "$dir/worker.log" >&2
}

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite://$dir/jobs.db" RUST_LOG=warn
export NSJAIL_PATH=${NSJAIL_PATH:-$runtime/bin/nsjail} PYTHON_RUNTIME=${PYTHON_RUNTIME:-$runtime/python}
export NSJAIL_CONFIG=${NSJAIL_CONFIG:-$PWD/nsjail.cfg}
key=$("$bin/api" keys create --name "$name" 2>/dev/null)
env PORT="$port" AUTH=required "${api_env[@]}" "$bin/api" 2>"$dir/api.log" &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
  kill -0 "${pids[0]}" 2>/dev/null || { service_logs; echo "$name: the api exited" >&2; exit 1; }
  sleep 0.1
done
METRICS_ADDR=off "$bin/worker" 2>"$dir/worker.log" &
pids+=($!)
