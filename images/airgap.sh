#!/usr/bin/env bash
# Build the images where no container registry (and perhaps no PyPI) can be reached: the recipe an
# air-gapped Kubeflow site follows, and how these images are built and smoke-tested on machines that reach
# only Debian's and PyPI's package servers.
#
#   images/airgap.sh engine        podman (+ runc) from the machine's Debian packages, configured for VMs
#   images/airgap.sh base          a Debian base made with debootstrap from the machine's own apt sources,
#                                  imported as $AIRGAP_BASE (stands in for the pinned python:3.11-slim)
#   images/airgap.sh wheelhouse    every wheel of requirements/cpu.lock in $WHEELHOUSE, as a simple index
#   images/airgap.sh build         serve the wheelhouse on 127.0.0.1 and build the CPU image from it
#   images/airgap.sh smoke         serve the wheelhouse and run images/smoke.sh (make image-smoke AIRGAP=1)
#   images/airgap.sh all           engine, base, wheelhouse and build, in order
#
# Variables: ENGINE (podman), AIRGAP_BASE (localhost/fish-speech-base:bookworm), WHEELHOUSE
# (images/.wheelhouse), WHEEL_DIRS (folders of wheels already on disk, searched before the index; default
# /opt/wheels where it exists), SUITE (the machine's Debian suite), DEBIAN_MIRROR (from the apt sources),
# INDEX_PORT (8765), IMAGES (cpu).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
ENGINE=${ENGINE:-podman}
AIRGAP_BASE=${AIRGAP_BASE:-localhost/fish-speech-base:bookworm}
WHEELHOUSE=${WHEELHOUSE:-$REPO/images/.wheelhouse}
INDEX_PORT=${INDEX_PORT:-8765}
IMAGES=${IMAGES:-cpu}
PYTHON=${PYTHON:-python3}
if [ -z "${WHEEL_DIRS+x}" ]; then WHEEL_DIRS=$([ -d /opt/wheels ] && echo /opt/wheels || true); fi

log() { printf 'airgap: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

debian_suite() {
  # shellcheck disable=SC1091
  [ -n "${SUITE:-}" ] && { echo "$SUITE"; return; }
  . /etc/os-release && [ -n "${VERSION_CODENAME:-}" ] || die "no VERSION_CODENAME in /etc/os-release: set SUITE"
  echo "$VERSION_CODENAME"
}

debian_mirror() {
  # The first Debian archive URI in the machine's apt sources (deb822 .sources or one-line sources.list).
  [ -n "${DEBIAN_MIRROR:-}" ] && { echo "$DEBIAN_MIRROR"; return; }
  local uri
  uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}')
  [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
    | awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}')
  [ -n "$uri" ] || die "no Debian archive in /etc/apt/sources*: set DEBIAN_MIRROR"
  echo "$uri"
}

ulimits() {
  # default_ulimits for containers.conf: the limits this shell has, nproc lowered to $1 when given.
  printf '["nofile=%s:%s", "nproc=%s:%s"]' "$(ulimit -Hn)" "$(ulimit -Hn)" "${1:-$(ulimit -Hu)}" "${1:-$(ulimit -Hu)}"
}

probe_ulimits() {
  # Some VMs refuse an nproc limit the shell itself has (conmon runs with a lower one): halve nproc in
  # containers.conf until a container starts from image $1.
  local conf=/etc/containers/containers.conf nproc
  nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] && nproc=1048576
  until "$ENGINE" run --rm "$1" true 2>/dev/null; do
    [ "$nproc" -gt 1024 ] || die "no container starts from $1 even with nproc=1024: see $ENGINE run --rm $1 true"
    nproc=$((nproc / 2))
    log "a container did not start: default_ulimits nproc=$nproc in $conf"
    sed -i "s/^default_ulimits = .*/default_ulimits = $(ulimits "$nproc")/" "$conf"
  done
}

cmd_engine() {
  if [ "$ENGINE" = podman ]; then
    command -v podman >/dev/null && command -v runc >/dev/null || {
      log "installing podman and runc from Debian's packages"
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc uidmap slirp4netns fuse-overlayfs
    }
    # On VMs like these, crun (podman's default) fails to create containers, and podman's default
    # RLIMIT_NOFILE and RLIMIT_NPROC are above the machine's hard limits ("setrlimit: operation not permitted"):
    # use runc and the limits this shell has.
    local conf=/etc/containers/containers.conf
    if [ -f "$conf" ] && grep -q '^ *runtime *= *"runc"' "$conf" && grep -q '^ *default_ulimits' "$conf"; then
      log "$conf already sets runtime = \"runc\" and default_ulimits"
    elif [ -f "$conf" ] && grep -Eq '^ *(runtime|default_ulimits) *=' "$conf"; then
      die "$conf sets runtime or default_ulimits already: make it runtime = \"runc\" and default_ulimits = $(ulimits)"
    else
      log "writing runtime = \"runc\" and default_ulimits to $conf"
      mkdir -p /etc/containers
      cat >>"$conf" <<CONF
# images/airgap.sh: crun fails on this kind of VM, and podman's default nofile/nproc limits exceed the hard ones.
[containers]
default_ulimits = $(ulimits)

[engine]
runtime = "runc"
CONF
    fi
  else
    command -v docker >/dev/null || {
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
    }
  fi
  "$ENGINE" info >/dev/null || die "$ENGINE info failed: the engine cannot run here"
  log "$ENGINE is ready"
}

cmd_base() {
  command -v debootstrap >/dev/null || {
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
  }
  local suite mirror rootfs
  suite=$(debian_suite)
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /var/tmp/fish-speech-rootfs.XXXXXX)
  trap 'rm -rf "$rootfs"' RETURN
  log "debootstrap $suite from $mirror (minbase + python3, python3-venv, ca-certificates, passwd)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,passwd \
    "$suite" "$rootfs" "$mirror" >&2
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb
  # The same environment the official python image sets; the Dockerfiles only need python3 with venv.
  tar -C "$rootfs" -c . | "$ENGINE" import \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$AIRGAP_BASE" >/dev/null
  [ "$ENGINE" = podman ] && probe_ulimits "$AIRGAP_BASE"
  log "imported $AIRGAP_BASE ($("$ENGINE" run --rm "$AIRGAP_BASE" python3 --version))"
}

cmd_wheelhouse() {
  local lock
  mkdir -p "$WHEELHOUSE/files"
  for kind in $IMAGES; do
    lock=$REPO/requirements/$kind.lock
    [ -f "$lock" ] || die "$lock missing: run make locks"
    local links=()
    for d in $WHEEL_DIRS; do links+=(--find-links "$d"); done
    log "downloading the files of $lock into $WHEELHOUSE/files"
    # --require-hashes: the wheelhouse holds exactly the files the lock names, checked as they arrive.
    PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS='' "$PYTHON" -m pip download --quiet --no-deps --require-hashes \
      --dest "$WHEELHOUSE/files" "${links[@]}" ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r "$lock"
  done
  "$PYTHON" "$REPO/images/wheelhouse_index.py" "$WHEELHOUSE"
}

serve_index() {
  # The wheelhouse on 127.0.0.1 for the build containers (--network host); stopped when the script exits.
  [ -d "$WHEELHOUSE/simple" ] || die "no index in $WHEELHOUSE: run images/airgap.sh wheelhouse"
  "$ENGINE" image inspect "$AIRGAP_BASE" >/dev/null 2>&1 || die "no image $AIRGAP_BASE: run images/airgap.sh base"
  "$PYTHON" -m http.server --bind 127.0.0.1 --directory "$WHEELHOUSE" "$INDEX_PORT" >/dev/null 2>&1 &
  SERVER=$!
  trap 'kill "$SERVER" 2>/dev/null || true' EXIT
  local index="http://127.0.0.1:$INDEX_PORT/simple/" _
  for _ in $(seq 50); do
    "$PYTHON" "$REPO/images/index_reachable.py" "$index" torch 2>/dev/null | grep -q yes && break
    sleep 0.2
  done
  AIRGAP_ARGS=(--network host --build-arg "BASE_IMAGE=$AIRGAP_BASE" --build-arg "PIP_INDEX_URL=$index"
    --build-arg "TORCH_INDEX_URL=$index")
}

cmd_build() {
  serve_index
  local only=()
  for kind in $IMAGES; do only+=(--only "$kind"); done
  "$PYTHON" "$REPO/images/build.py" build --engine "$ENGINE" "${only[@]}" "${AIRGAP_ARGS[@]}" "$@"
}

cmd_smoke() {
  serve_index
  ENGINE=$ENGINE BUILD_ARGS="${AIRGAP_ARGS[*]}" bash "$REPO/images/smoke.sh"
}

case "${1:-}" in
  engine) cmd_engine ;;
  base) cmd_base ;;
  wheelhouse) cmd_wheelhouse ;;
  build) shift; cmd_build "$@" ;;
  smoke) cmd_smoke ;;
  all) cmd_engine && cmd_base && cmd_wheelhouse && cmd_build ;;
  *) sed -n '2,18p' "$0" >&2; exit 2 ;;
esac
