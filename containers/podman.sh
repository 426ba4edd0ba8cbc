# Sourced by the container scripts: installs podman and podman-compose when missing and points
# both at a configuration made for this host, so nothing outside the project changes.
#
# Podman's default runtime (crun) refuses hosts with a hybrid cgroup layout, and podman fails
# to raise a container's ulimits above the host's: runc, cgroupfs and the host's own limits
# work everywhere.

containers_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$containers_dir/.." && pwd)
# podman-compose from PyPI: Debian's 1.0.3 ignores `--scale` and health-check conditions.
PODMAN_COMPOSE_VERSION=1.5.0
tools_dir=${RUNTIME_DIR:-/opt/runbox}/container-tools

install_podman() {
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
      || ! command -v debootstrap >/dev/null || [[ ! -x /usr/lib/podman/aardvark-dns ]]; then
    echo "containers: installing podman, runc and debootstrap with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      podman runc debootstrap netavark aardvark-dns iptables uidmap catatonit >/dev/null
  fi
  if [[ ! -x "$tools_dir/bin/podman-compose" ]] \
      || ! "$tools_dir/bin/podman-compose" --version 2>/dev/null \
           | grep -q "podman-compose version $PODMAN_COMPOSE_VERSION"; then
    echo "containers: installing podman-compose $PODMAN_COMPOSE_VERSION in $tools_dir"
    python3 -m venv --clear "$tools_dir"
    "$tools_dir/bin/pip" install --quiet --no-cache-dir "podman-compose==$PODMAN_COMPOSE_VERSION"
  fi
  export PATH="$tools_dir/bin:$PATH"

  # Above 32768 processes runc is refused here even below the host's hard limit.
  local nofile nproc conf_dir
  nofile="$(ulimit -Sn):$(ulimit -Hn)"
  nproc=$(ulimit -Hu)
  [[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
  nproc="$nproc:$nproc"
  conf_dir="$tools_dir/podman"
  mkdir -p "$conf_dir"
  cat >"$conf_dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile", "nproc=$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF="$conf_dir/containers.conf"
  # `podman build` does not read default_ulimits.
  build_ulimits=(--ulimit "nofile=$nofile" --ulimit "nproc=$nproc")
}
