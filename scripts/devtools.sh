#!/usr/bin/env bash
# Installs the tools the test suite uses, idempotently:
#   CPython 3.11's own test suite (Debian's libpython3.11-testsuite, under
#                         /usr/lib/python3.11/test), the corpus of `make fidelity`
#   $RUNTIME_DIR/devtools virtualenv with runtime/dev-requirements.txt (the OpenAPI validator);
#                         a no-op unless the pinned requirements or this script changed
#   $RUNTIME_DIR/cargo-tools/bin/cargo-deny, the pinned version, built from crates.io (a few
#                         minutes, once)
# Needs python3 with venv, which scripts/provision.sh installs. `--testsuite` installs only the
# test suite.
set -euo pipefail

testsuite=libpython3.11-testsuite
if ! dpkg-query -W -f='${Status}' "$testsuite" 2>/dev/null | grep -q 'install ok installed'; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "devtools: installing $testsuite with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$testsuite" >/dev/null \
      || { apt-get update -q >/dev/null \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$testsuite" >/dev/null; }
  else
    echo "devtools: $testsuite is required (Debian: apt-get install $testsuite)" >&2
    exit 1
  fi
fi
if [[ ${1:-} == --testsuite ]]; then
  exit 0
fi

RUNTIME_DIR=${RUNTIME_DIR:-/opt/runbox}
CARGO_DENY_VERSION=0.20.2
cargo_deny="$RUNTIME_DIR/cargo-tools/bin/cargo-deny"
if ! "$cargo_deny" --version 2>/dev/null | grep -qx "cargo-deny $CARGO_DENY_VERSION"; then
  echo "devtools: building cargo-deny $CARGO_DENY_VERSION into $RUNTIME_DIR/cargo-tools"
  cargo install --quiet --locked --root "$RUNTIME_DIR/cargo-tools" "cargo-deny@$CARGO_DENY_VERSION"
fi

PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
requirements="$repo/runtime/dev-requirements.txt"
venv="$RUNTIME_DIR/devtools"
stamp="$venv/.provisioned"
want=$(cat "$requirements" "$0" | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/openapi-spec-validator" && -x "$venv/bin/schemathesis" ]]; then
  exit 0
fi

echo "devtools: installing test tools in $venv"
"$PYTHON" -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --no-cache-dir --only-binary=:all: -r "$requirements"
"$venv/bin/openapi-spec-validator" --version >/dev/null
"$venv/bin/schemathesis" --version >/dev/null
echo "$want" > "$stamp"
echo "devtools: done"
