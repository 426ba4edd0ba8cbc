#!/usr/bin/env bash
# Installs the tools the test suite uses (runtime/dev-requirements.txt) into a virtualenv at
# $RUNTIME_DIR/devtools, idempotently: a no-op unless the pinned requirements or this script
# changed. Needs python3 with venv, which scripts/provision.sh installs.
set -euo pipefail

RUNTIME_DIR=${RUNTIME_DIR:-/opt/runbox}
PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
requirements="$repo/runtime/dev-requirements.txt"
venv="$RUNTIME_DIR/devtools"
stamp="$venv/.provisioned"
want=$(cat "$requirements" "$0" | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/openapi-spec-validator" ]]; then
  exit 0
fi

echo "devtools: installing test tools in $venv"
"$PYTHON" -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir --only-binary=:all: -r "$requirements"
"$venv/bin/openapi-spec-validator" --version >/dev/null
echo "$want" > "$stamp"
echo "devtools: done"
