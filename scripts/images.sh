#!/usr/bin/env bash
# Builds and runs the project's container images with podman, on a machine with no Docker engine
# and no container registry (only Debian's and PyPI's package servers): the base image is made
# from Debian packages with debootstrap. In real CI (GitHub Actions) the images build with
# Docker on their default public base instead; see .github/workflows/.
#
#   bash scripts/images.sh install-tools     apt-get install podman, buildah, debootstrap, runc and
#                                            the shellcheck linter (root)
#   bash scripts/images.sh base              localhost/inception-finetune-base:bookworm (debootstrap)
#   bash scripts/images.sh build cpu|gpu     inception-finetune-{cpu,gpu}:VERSION on that base
#   bash scripts/images.sh podman ARGS...    podman with this script's storage and settings
#   bash scripts/images.sh env               print the variables that make plain `podman` do the same
#
# Settings (environment):
#   IMAGES_ROOT   where the image store and podman's settings live (default
#                 /var/tmp/inception-finetune-images; keep it: builds reuse its layers)
#   IMAGES_BASE   base image to build on (default: the debootstrap one, made on first use)
#   VERSION       image tag (default: pyproject.toml's version)
#   BUILD_CA      a CA bundle that pip inside the build must trust (default: this machine's
#                 /etc/ssl/certs/ca-certificates.crt, for networks that intercept TLS); "none": no
#   BUILD_WHEELS  "host" (default): this machine's pip downloads the image's pinned wheels first
#                 (its own index, mirrors and proxy settings) and the build installs from them
#                 with no index; "index": pip inside the build reaches the package index itself
#
# Why these settings (see the project's shared RECIPES): overlay storage under IMAGES_ROOT (50x
# faster than vfs), `--isolation chroot --network host` builds, Debian's runc as the runtime and
# explicit ulimits (this kind of machine mixes cgroup v1 and v2), cgroupfs and file events (no
# systemd). Containers only ever use the host network or none.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT=${IMAGES_ROOT:-/var/tmp/inception-finetune-images}
BASE_IMAGE=localhost/inception-finetune-base:bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

fail() { echo "scripts/images.sh: $*" >&2; exit 1; }

version() {
  if [ -n "${VERSION:-}" ]; then echo "$VERSION"; return; fi
  sed -n 's/^version *= *"\(.*\)"/\1/p' pyproject.toml | head -n 1
}

configure() {  # writes podman's settings under $ROOT and exports the variables that select them
  mkdir -p "$ROOT/graph" "$ROOT/run" "$ROOT/tmp"
  cat >"$ROOT/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$ROOT/graph"
runroot = "$ROOT/run"
EOF
  cat >"$ROOT/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
image_parallel_copies = 2
EOF
  export CONTAINERS_STORAGE_CONF="$ROOT/storage.conf"
  export CONTAINERS_CONF="$ROOT/containers.conf"
  export TMPDIR="$ROOT/tmp"
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (as root: bash scripts/images.sh install-tools)."
  done
}

install_tools() {
  [ "$(id -u)" = 0 ] || fail "install-tools needs root (apt-get)."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # fuse-overlayfs and uidmap: what podman wants for overlay storage and user namespaces;
  # and the shellcheck package: for actionlint's checks of the workflows' run scripts (tests/test_images.py).
  apt-get install -y -qq --no-install-recommends \
    podman buildah debootstrap runc fuse-overlayfs uidmap ca-certificates shellcheck >/dev/null
}

exists() { podman image exists "$1"; }

make_base() {  # a Debian bookworm image with python3 and its venv module, from debootstrap
  need podman debootstrap
  if exists "$BASE_IMAGE"; then return; fi
  [ "$(id -u)" = 0 ] || fail "making the Debian base needs root (debootstrap)."
  local rootfs="$ROOT/rootfs.$$"
  rm -rf "$rootfs"
  echo "making $BASE_IMAGE with debootstrap (about a minute)" >&2
  # minbase has no Python: include the interpreter, venv (ensurepip) and the CA bundle, so the
  # Dockerfiles treat it like python:3.11-slim-bookworm (an interpreter and `python3 -m venv`).
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$DEBIAN_MIRROR" >"$ROOT/debootstrap.log" 2>&1 ||
    fail "debootstrap failed (see $ROOT/debootstrap.log)."
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  tar -C "$rootfs" -c . | podman import --quiet \
    --change 'CMD ["python3"]' --change 'ENV LANG=C.UTF-8' - "$BASE_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

wheelhouse() {  # flavour -> a folder of the image's pinned wheels, downloaded by this machine's pip
  local flavour=$1 dir="$ROOT/wheels/$1" python=python3
  [ -x .venv/bin/python ] && python=.venv/bin/python
  mkdir -p "$dir"
  exec 9>"$ROOT/wheels-$flavour.lock"
  flock 9  # one download into this folder at a time
  "$python" scripts/image_requirements.py "$flavour" --requirements requirements.txt \
    --pyproject pyproject.toml >"$dir/requirements.txt"
  # Binary wheels only (the image has no compiler); files already there are reused. A proxy in
  # front of the index may refuse a request now and then (403 on CONNECT, seen on CI machines):
  # pip's own retries take seconds, so whole attempts are repeated a minute apart.
  local attempt
  for attempt in 1 2 3 4; do
    if "$python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --retries 10 --dest "$dir" -c requirements.txt -r "$dir/requirements.txt" \
      >"$ROOT/wheels-$flavour.log" 2>&1; then
      exec 9>&-
      echo "$dir"
      return
    fi
    [ "$attempt" = 4 ] && break
    echo "scripts/images.sh: downloading the $flavour image's wheels failed (attempt $attempt of 4; $(grep -m1 -o 'Tunnel connection failed[^)]*\|No matching distribution[^)]*' "$ROOT/wheels-$flavour.log" || echo see the log)); again in 60 s" >&2
    sleep 60
  done
  tail -n 20 "$ROOT/wheels-$flavour.log" >&2
  fail "downloading the $flavour image's wheels failed 4 times (log: $ROOT/wheels-$flavour.log)."
}

build() {  # cpu|gpu
  local flavour=$1 base=${IMAGES_BASE:-}
  case "$flavour" in cpu | gpu) ;; *) fail "build takes cpu or gpu, not '$flavour'." ;; esac
  need podman
  if [ -z "$base" ]; then make_base; base=$BASE_IMAGE; fi
  local ca=${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt} extra=()
  if [ "$ca" != none ] && [ -f "$ca" ]; then
    # pip inside the build trusts what this machine trusts (a TLS-intercepting proxy's CA):
    # mounted for the RUN steps only, never copied into a layer.
    extra+=(--volume "$(readlink -f "$ca"):/run/build-ca.crt:ro" --build-arg PIP_CERT=/run/build-ca.crt)
  fi
  if [ "${BUILD_WHEELS:-host}" = host ]; then
    # Inside the build, pip sees neither this machine's pip settings (local mirrors, find-links)
    # nor, behind some proxies, the index at all: it installs from wheels fetched out here.
    local wheels
    wheels=$(wheelhouse "$flavour")
    extra+=(--volume "$wheels:/run/wheels:ro" --build-arg WHEELS=/run/wheels)
  fi
  local tag start=$SECONDS
  tag="inception-finetune-$flavour:$(version)"
  echo "building $tag from Dockerfile.$flavour on $base" >&2
  podman build --isolation chroot --network host --layers \
    -f "Dockerfile.$flavour" -t "$tag" \
    --build-arg "BASE=$base" --build-arg "VERSION=$(version)" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${extra[@]}" . >"$ROOT/build-$flavour.log" 2>&1 ||
    { tail -n 30 "$ROOT/build-$flavour.log" >&2; fail "building $tag failed (log: $ROOT/build-$flavour.log)."; }
  local size
  size=$(podman image inspect --format '{{.Size}}' "$tag")
  echo "built $tag in $((SECONDS - start)) s: $((size / 1000000)) MB" >&2
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  install-tools) install_tools ;;
  base) configure; make_base ;;
  build) [ $# = 1 ] || fail "usage: build cpu|gpu"; configure; build "$1" ;;
  podman) configure; need podman; exec podman "$@" ;;
  env)
    configure
    printf 'export CONTAINERS_STORAGE_CONF=%q CONTAINERS_CONF=%q TMPDIR=%q\n' \
      "$CONTAINERS_STORAGE_CONF" "$CONTAINERS_CONF" "$TMPDIR"
    ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
