#!/usr/bin/env bash
# Makes, on a host that cannot pull from a registry, the base images the Dockerfiles start
# from, under the names a Docker host would pull:
#   debian:bookworm-slim   debootstrap --variant=minbase bookworm
#   rust:1.95-bookworm     that base, Debian's C toolchain and this host's Rust 1.95
# and the local Postgres image the container test runs (runbox-test-postgres). Each is made
# once and kept in podman's store; REBUILD_BASE_IMAGES=1 makes them again.
set -euo pipefail
source "$(dirname "$0")/podman.sh"
install_podman

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUST_TOOLCHAIN=${RUST_TOOLCHAIN:-$(rustc --print sysroot)}

wanted() {
  [[ "${REBUILD_BASE_IMAGES:-}" == 1 ]] || ! podman image exists "$1"
}

if wanted docker.io/library/debian:bookworm-slim; then
  echo "containers: debootstrap bookworm (minbase) from $DEBIAN_MIRROR"
  rootfs=$(mktemp -d /tmp/runbox-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' EXIT
  debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >/dev/null
  # Slim as the official image is: no documentation, manuals or translations, and apt keeps
  # no packages or lists after an install.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
  cat >"$rootfs/etc/apt/apt.conf.d/slim" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
APT::Install-Recommends "false";
Acquire::Languages "none";
APT
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - docker.io/library/debian:bookworm-slim >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

if wanted docker.io/library/rust:1.95-bookworm; then
  echo "containers: rust:1.95-bookworm from $RUST_TOOLCHAIN"
  podman build --quiet "${build_ulimits[@]}" -t docker.io/library/rust:1.95-bookworm \
    -v "$RUST_TOOLCHAIN:/toolchain:ro" -f "$containers_dir/test/rust.Containerfile" \
    "$containers_dir/test" >/dev/null
fi

if wanted localhost/runbox-test-postgres; then
  echo "containers: runbox-test-postgres"
  podman build --quiet "${build_ulimits[@]}" -t localhost/runbox-test-postgres \
    -f "$containers_dir/test/postgres.Containerfile" "$containers_dir/test" >/dev/null
fi
