#!/usr/bin/env bash
# `make containers`: builds the base images where none can be pulled, builds both service
# images from the repository's Dockerfiles, starts docker-compose.yml (Postgres, the API, three
# workers) through podman-compose, and runs the container test (containers/test/stack_test.py)
# against it. Logs of every container land in target/containers/ when it fails.
#
# Settings: CA_BUNDLE (a CA bundle for TLS-intercepting proxies, passed to the builds as a
# secret; default the host's), RUNBOX_PORT (the API's port on the host, default 18080),
# KEEP_STACK=1 (leave the stack running afterwards).
set -euo pipefail
source "$(dirname "$0")/podman.sh"
install_podman
"$containers_dir/images.sh"
# The compose file names its seccomp profile relative to the repository.
cd "$repo"

project=runbox-test
export RUNBOX_PORT=${RUNBOX_PORT:-18080}
artifacts="$repo/target/containers"
mkdir -p "$artifacts"
compose=(podman-compose --project-name "$project" -f "$repo/docker-compose.yml"
  -f "$containers_dir/test/compose.override.yml")

ca_bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
secret=()
[[ -s "$ca_bundle" ]] && secret=(--secret "id=ca-bundle,src=$ca_bundle")

build() {
  local file=$1 tag=$2 log="$artifacts/build-${1#Dockerfile.}.log" started
  started=$(date +%s)
  # The docker format keeps HEALTHCHECK, which OCI images cannot carry.
  podman build --format docker "${build_ulimits[@]}" "${secret[@]}" --layers \
    -f "$repo/$file" -t "$tag" "$repo" >"$log" 2>&1 || { tail -40 "$log"; exit 1; }
  echo "containers: built $tag from $file in $(( $(date +%s) - started )) s," \
    "$(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
}
build Dockerfile.api localhost/runbox-api:test
build Dockerfile.worker localhost/runbox-worker:test

remove_stack() {
  "${compose[@]}" down --volumes --timeout 5 >/dev/null 2>&1 || true
  # What `down` left (it stops at containers that others depend on).
  podman ps -aq --filter "label=io.podman.compose.project=$project" \
    | xargs -r podman rm -f --depend >/dev/null 2>&1 || true
  podman volume ls -q --filter "label=io.podman.compose.project=$project" \
    | xargs -r podman volume rm -f >/dev/null 2>&1 || true
}

stop_stack() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    for name in $(podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$project"); do
      podman logs "$name" >"$artifacts/$name.log" 2>&1 || true
    done
    echo "containers: logs in $artifacts"
  fi
  [[ "${KEEP_STACK:-}" == 1 ]] || remove_stack
  exit $status
}
remove_stack
trap stop_stack EXIT
# A fresh deployment's first admin key, made as the README says: a one-off `api keys create`
# against the stack's database (it migrates the schema first), before the API starts, since
# the API listens beyond loopback and so refuses to start without a key.
"${compose[@]}" up -d --no-build postgres >"$artifacts/compose-up.log" 2>&1 \
  || { cat "$artifacts/compose-up.log"; exit 1; }
key=""
for _ in $(seq 60); do
  if out=$("${compose[@]}" run --rm --no-deps api api keys create --name container-test --admin \
      2>>"$artifacts/keys-create.log"); then
    key=$(grep -o 'rbx_[A-Za-z0-9_-]*' <<<"$out" | tail -n 1)
    break
  fi
  sleep 2
done
[[ -n "$key" ]] || { echo "containers: could not create the first API key"; cat "$artifacts/keys-create.log"; exit 1; }
"${compose[@]}" up -d --no-build --scale worker=3 >>"$artifacts/compose-up.log" 2>&1 \
  || { cat "$artifacts/compose-up.log"; exit 1; }

RUNBOX_URL="http://127.0.0.1:$RUNBOX_PORT" PROJECT="$project" RUNBOX_KEY="$key" \
  COMPOSE="$(printf '%s\n' "${compose[@]}" | python3 -c 'import json, sys; print(json.dumps(sys.stdin.read().split("\n")[:-1]))')" \
  python3 "$containers_dir/test/stack_test.py"
