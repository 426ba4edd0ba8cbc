#!/usr/bin/env bash
# Browser test of the playground: starts the API and one worker on a temporary SQLite file,
# drives the page in headless Chromium (e2e/playground.test.mjs), stops both on exit.
# Screenshots and the processes' logs go to target/e2e-artifacts/. With UPDATE_SCREENSHOT=1
# the README's docs/playground.png is retaken.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

: "${RUNTIME_DIR:=/opt/runbox}"
: "${NSJAIL_PATH:=$RUNTIME_DIR/bin/nsjail}"
: "${PYTHON_RUNTIME:=$RUNTIME_DIR/python}"
: "${NSJAIL_CONFIG:=$root/nsjail.cfg}"
export NSJAIL_PATH PYTHON_RUNTIME NSJAIL_CONFIG
chromium=${CHROMIUM_PATH:-/usr/bin/chromium}

if [ ! -x "$chromium" ]; then
  echo "e2e: installing chromium" >&2
  packages=(chromium chromium-driver)
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${packages[@]}" ||
    { apt-get update && apt-get install -y --no-install-recommends "${packages[@]}"; }
fi

(cd e2e && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)

cargo build --locked --bins

artifacts=$root/target/e2e-artifacts
rm -rf "$artifacts"
mkdir -p "$artifacts"
tmp=$(mktemp -d)
port=$(node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })')
url=http://127.0.0.1:$port

pids=()
stop() {
  local status=$?
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
  if [ "$status" -ne 0 ]; then
    echo "e2e: failed; last lines of the logs in $artifacts:" >&2
    tail -n 20 "$artifacts/api.log" "$artifacts/worker.log" >&2 2>/dev/null || true
  fi
  exit "$status"
}
trap stop INT TERM EXIT

export DATABASE_URL=sqlite://$tmp/jobs.db HOST=127.0.0.1 PORT=$port
./target/debug/api >"$artifacts/api.log" 2>&1 &
pids+=($!)
# The API applies migrations at start; workers only check them, so start the worker once
# the API answers.
for _ in $(seq 1 200); do
  if curl -fsS "$url/ready" >/dev/null 2>&1; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then echo "e2e: api exited" >&2; exit 1; fi
  sleep 0.1
done
curl -fsS "$url/ready" >/dev/null
./target/debug/worker >"$artifacts/worker.log" 2>&1 &
pids+=($!)

docs_screenshot=
if [ "${UPDATE_SCREENSHOT:-}" = 1 ]; then docs_screenshot=$root/docs/playground.png; fi
RUNBOX_URL=$url E2E_ARTIFACTS=$artifacts E2E_DOCS_SCREENSHOT=$docs_screenshot CHROMIUM_PATH=$chromium \
  node --test --test-reporter=spec e2e/playground.test.mjs

echo "e2e: screenshots:"
ls -1 "$artifacts"/*.png
if [ -n "$docs_screenshot" ]; then echo "e2e: updated $docs_screenshot"; fi
