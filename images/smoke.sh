#!/usr/bin/env bash
# make image-smoke: build the CPU image with docker or podman and check, inside it, what the pipeline relies
# on. Prints one line per check and a summary (engine, build time, image size); exits non-zero on the first
# failed check.
#
#   ENGINE=podman|docker  (default: the first that answers)    BUILD_ARGS='--build-arg BASE_IMAGE=...'
#   SMOKE_IMAGE=REF       (default localhost/fish-speech-smoke/fish-speech-kfp-cpu:smoke)
#   SMOKE_FULL=1          also run the whole pipeline (pipeline.py --run-local, tiny models) in the image
#   SMOKE_NO_BUILD=1      check an image built already (SMOKE_IMAGE)
#
# Air-gapped or registry-less machines: build the base and a local index first (images/airgap.sh), then
#   BUILD_ARGS="--network host --build-arg BASE_IMAGE=... --build-arg PIP_INDEX_URL=... ..." make image-smoke
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
REGISTRY=localhost/fish-speech-smoke
TAG=smoke
SMOKE_IMAGE=${SMOKE_IMAGE:-$REGISTRY/fish-speech-kfp-cpu:$TAG}
read -r -a build_args <<<"${BUILD_ARGS:-}"

if [ -z "${ENGINE:-}" ]; then
  for e in podman docker; do
    if command -v "$e" >/dev/null && "$e" info >/dev/null 2>&1; then ENGINE=$e; break; fi
  done
fi
[ -n "${ENGINE:-}" ] || { echo "image-smoke: no container engine answers (podman, docker): images/airgap.sh engine installs podman" >&2; exit 3; }

pass() { printf 'image-smoke: ok   %s\n' "$*"; }
fail() { printf 'image-smoke: FAIL %s\n' "$*" >&2; exit 1; }
run() { "$ENGINE" run --rm "$@"; }

start=$(date +%s)
if [ -z "${SMOKE_NO_BUILD:-}" ]; then
  "$PYTHON" "$REPO/images/build.py" build --engine "$ENGINE" --only cpu --registry "$REGISTRY" --tag "$TAG" \
    "${build_args[@]}"
fi
build_s=$(( $(date +%s) - start ))
size=$("$ENGINE" image inspect --format '{{.Size}}' "$SMOKE_IMAGE")
pass "built $SMOKE_IMAGE with $ENGINE in ${build_s} s ($(( size / 1000000 )) MB)"

# 1. not root, by default and under the pod securityContexts the README names
uid=$(run "$SMOKE_IMAGE" id -u)
[ "$uid" != 0 ] || fail "the image runs as root"
pass "runs as UID $uid ($(run "$SMOKE_IMAGE" id -un 2>/dev/null || echo '?'))"
for user in 1000:0 123456:0; do
  run --user "$user" "$SMOKE_IMAGE" sh -c 'set -e; touch "$HOME/probe" "$XDG_CACHE_HOME/probe" /tmp/probe /minio/probe
    python -c "import matplotlib.pyplot, huggingface_hub, torch" ' \
    || fail "UID:GID $user cannot write HOME, the caches, /tmp or /minio"
  pass "UID:GID $user: HOME, XDG_CACHE_HOME, /tmp and /minio writable; matplotlib, huggingface_hub, torch import"
done

# 2. the installed set is consistent, and torch is the CPU build of 2.13.0
run "$SMOKE_IMAGE" pip check >/dev/null || fail "pip check: $(run "$SMOKE_IMAGE" pip check || true)"
pass "pip check: no broken requirements"
torch=$(run "$SMOKE_IMAGE" python -c 'import torch; print(torch.__version__, torch.version.cuda)')
[ "$torch" = "2.13.0+cpu None" ] || fail "torch is $torch, expected 2.13.0+cpu without CUDA"
pass "torch $torch (the CPU build)"

# 3. the command and the pipeline, inside the image (the repository mounted read-only at /src)
run "$SMOKE_IMAGE" sh -c 'fish-speech fetch-weights tiny --output /tmp/tiny && ls /tmp/tiny' >/tmp/smoke-weights.txt \
  || fail "fish-speech fetch-weights tiny"
pass "fish-speech fetch-weights tiny: $(tr '\n' ' ' </tmp/smoke-weights.txt)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
chmod 0777 "$scratch"
run -v "$REPO:/src:ro" -v "$scratch:/out" -w /src -e PYTHONPATH=/src "$SMOKE_IMAGE" \
  python pipeline.py --compile --output /out/pipeline.yaml --registry "$REGISTRY" --tag "$TAG" >/dev/null \
  || fail "python pipeline.py --compile inside the image"
# readable by the other UIDs below whatever mode the compiler gave it (older checkouts wrote it 0600)
chmod a+r "$scratch/pipeline.yaml"
grep -q "image: $SMOKE_IMAGE" "$scratch/pipeline.yaml" || fail "the compiled pipeline does not use $SMOKE_IMAGE"
pass "pipeline.py --compile inside the image ($(grep -c '^ *image: ' "$scratch/pipeline.yaml") executors, CPU ones on $SMOKE_IMAGE)"

# 4. one compiled component, replayed as KFP's launcher runs it: executor input with an output artifact under
# minio://, which the executor maps to /minio. Once on a scratch volume at /minio (what backends with
# kubeflow/pipelines#10538 mount), once on the image's own /minio (older backends), as an arbitrary UID.
for mode in "--tmpfs /minio:rw,mode=1777" ""; do
  # shellcheck disable=SC2086
  out=$(run $mode --user 123456:0 -v "$REPO/images/replay_component.py:/replay.py:ro" -v "$scratch:/out:ro" \
    "$SMOKE_IMAGE" python /replay.py /out/pipeline.yaml fetch-weights minio://mlpipeline/smoke source=tiny revision= \
    | tail -n 1)
  "$PYTHON" - "$out" <<'PY' || fail "replayed fetch-weights (${mode:-the image /minio}): $out"
import json, sys
r = json.loads(sys.argv[1])
files = r["artifacts"]["model"]["files"]
assert r["rc"] == 0, r
assert {"model.pth", "config.json", "codec.pth"} <= set(files), files
assert "model" in r["output_metadata"]["artifacts"], r["output_metadata"]
PY
  pass "replayed fetch-weights as the launcher does (${mode:-the image /minio}): $(echo "$out" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r["artifacts"]["model"]["path"], len(r["artifacts"]["model"]["files"]), "files, output_metadata.json written")')"
done

# 5. the workspace volume: a root-owned 0755 folder fails with one line naming the fix; group 0 writable works
ws=$(mktemp -d)
trap 'rm -rf "$scratch" "$ws"' EXIT
chmod 0755 "$ws"
set +e
msg=$(run --user 1000:0 -v "$ws:/mnt/fish-speech" "$SMOKE_IMAGE" \
  fish-speech fetch-weights tiny --output /mnt/fish-speech/weights 2>&1)
rc=$?
set -e
last=$(printf '%s\n' "$msg" | tail -n 1)
{ [ "$rc" = 2 ] && ! printf '%s' "$msg" | grep -q Traceback && printf '%s' "$last" | grep -q 'fsGroup'; } \
  || fail "a read-only workspace: expected exit 2 and one line naming the fix, got $rc: $msg"
pass "root-owned 0755 workspace volume: exit 2, no traceback: $last"
chgrp 0 "$ws" && chmod 2775 "$ws"
run --user 123456:0 -v "$ws:/mnt/fish-speech" "$SMOKE_IMAGE" \
  fish-speech fetch-weights tiny --output /mnt/fish-speech/weights >/dev/null \
  || fail "a group-0 writable workspace (what fsGroup: 0 or manifests/prepare-workspace gives) is not writable"
pass "group-0 writable workspace volume (fsGroup: 0 / manifests/prepare-workspace): writable by UID 123456"

# 6. optionally the whole pipeline in the image (about 2-4 minutes on 2 cores)
if [ -n "${SMOKE_FULL:-}" ]; then
  run -v "$REPO:/src:ro" -v "$scratch:/out" -w /src -e PYTHONPATH=/src "$SMOKE_IMAGE" \
    python pipeline.py --run-local --output /out/run >/dev/null || fail "pipeline.py --run-local in the image"
  pass "pipeline.py --run-local (the demo voice, tiny models) inside the image"
fi

echo "image-smoke: passed (engine $ENGINE, build ${build_s} s, image $(( size / 1000000 )) MB)"
