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

schemathesis=${RUNTIME_DIR:-/opt/runbox}/devtools/bin/schemathesis
name=schemathesis
# Generated jobs may ask for long timeouts; the answer that they are still running (202) is
# part of the contract too, and comes after this grace.
api_env=(QUEUE_GRACE_SECS=1)
source scripts/keyed-service.sh

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
  echo "schemathesis: failures above" >&2
  service_logs
fi
exit "$status"
