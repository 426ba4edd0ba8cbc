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

python=${PYTHON:-python3}
name=python-client
api_env=()
source scripts/keyed-service.sh

"$python" -m venv "$dir/venv"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$dir/venv/bin/pip" install --quiet ./clients/python

status=0
# Without bytecode files, so the run leaves nothing behind in clients/python/tests.
RUNBOX_URL="http://127.0.0.1:$port" RUNBOX_KEY=$key PYTHONDONTWRITEBYTECODE=1 \
  "$dir/venv/bin/python" -m unittest discover -s clients/python/tests -v || status=$?
if [[ $status -ne 0 ]]; then
  echo "python-client: failures above" >&2
  service_logs
fi
exit "$status"
