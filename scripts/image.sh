#!/usr/bin/env bash
# Build the opsbot image (Dockerfile).
#   scripts/image.sh        (`make image`) build localhost/opsbot:<version>; prints its name
#   scripts/image.sh base   only the base image (Debian bookworm + python3), cached
#
# With a Docker daemon: `docker build` FROM debian:bookworm-slim (the Dockerfile installs
# python3 into it). Without one (CI, this machine): buildah, from a base made here, because no
# image registry may be reachable: `debootstrap --variant=minbase bookworm` from the apt mirror
# this machine is configured with, python3 + python3-venv + ca-certificates included, turned into
# an image with `buildah from scratch` + `buildah add` + `buildah commit` (buildah 1.28 has no
# `import`). The base is made once and reused while its recipe (this file's BASE_* lines) is
# unchanged. The build runs with --isolation chroot (no daemon, no user namespaces needed),
# --format docker (keeps HEALTHCHECK), --pull=never (FROM uses the local base), and the host's CA
# bundle mounted read-only for pip.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n1)
IMAGE=${OPSBOT_IMAGE:-localhost/opsbot:$VERSION}
BASE_SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
BASE_RECIPE=$(printf '%s %s v2' "$BASE_SUITE" "$BASE_PACKAGES" | sha256sum | cut -c1-12)
BASE=${OPSBOT_BASE_IMAGE:-localhost/opsbot-base:$BASE_SUITE-$BASE_RECIPE}
CA=/etc/ssl/certs/ca-certificates.crt

log() { echo "image.sh: $*" >&2; }

have_docker() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

# The Debian mirror apt uses on this machine (its configured sources), else deb.debian.org.
mirror() {
  local site
  site=$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 2>/dev/null |
    awk -v suite="$BASE_SUITE" '$1 == suite {print $2; exit}')
  echo "${site:-http://deb.debian.org/debian/}"
}

make_base() {
  if buildah inspect --type image "$BASE" >/dev/null 2>&1; then
    log "base $BASE (cached)"
    return
  fi
  local root tar ctr
  root=$(mktemp -d /var/tmp/opsbot-base.XXXXXX)
  tar="$root.tar"
  log "debootstrap $BASE_SUITE ($BASE_PACKAGES) from $(mirror)"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" "$BASE_SUITE" "$root" "$(mirror)" \
    >"$root.log" 2>&1 || { tail -n 30 "$root.log" >&2; exit 1; }
  # what a slim Debian image leaves out: package caches, docs and manuals (licences stay)
  rm -rf "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  find "$root"/usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
  # the image runs with PYTHONPYCACHEPREFIX=/tmp/pycache (Dockerfile), which ignores these
  find "$root"/usr/lib/python3* -depth -type d -name __pycache__ -exec rm -rf {} +
  echo "deb $(mirror) $BASE_SUITE main" >"$root/etc/apt/sources.list"
  tar --numeric-owner -C "$root" -cf "$tar" --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' .
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$tar" / >/dev/null
  buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd /bin/bash \
    --label org.opencontainers.image.description="Debian $BASE_SUITE minbase + $BASE_PACKAGES" \
    "$ctr"
  buildah commit --quiet --rm --format docker "$ctr" "$BASE" >/dev/null
  # bases of earlier recipes
  buildah images --format '{{.Name}}:{{.Tag}}' | grep "^${BASE%:*}:" | grep -vx "$BASE" |
    xargs -r buildah rmi >/dev/null 2>&1 || true
  rm -rf "$root" "$tar" "$root.log"
  log "base $BASE made"
}

build() {
  if have_docker; then
    docker build --build-arg "VERSION=$VERSION" -t "$IMAGE" . >&2
  else
    make_base
    buildah bud --isolation chroot --format docker --pull=never --layers \
      --build-arg "DEBIAN=$BASE" --build-arg "VERSION=$VERSION" -v "$CA:$CA:ro" -t "$IMAGE" . >&2
  fi
  echo "$IMAGE"
}

case "${1:-build}" in
  base) make_base ;;
  build) build ;;
  *) echo "usage: $0 [build|base]" >&2; exit 2 ;;
esac
