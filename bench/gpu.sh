#!/usr/bin/env bash
# The prepared GPU run for a lent accelerator (full-size random weights). A lent device gives one command at
# most 10 minutes and a session 15 minutes in all, start-up included, so each row has its own timeout and the
# default set (extract_vq train synthesize) is sized to finish in about 7 minutes on one large GPU; run
# `evaluate` (and any row that timed out) in a second call when device time is left:
#   PYTHON=python3 bash bench/gpu.sh                      # extract_vq train synthesize
#   PYTHON=python3 bash bench/gpu.sh evaluate             # only that row
# Rows: extract_vq (fp32 = upstream's codes, and bf16, vs a naive per-file loop); train (LoRA tokens/s and MFU
# vs upstream's bf16-true batch-4 settings, and --mode full vs LoRA); synthesize (bf16 frames/s at batch 1
# with and without --compile, and batch 16); evaluate (6 candidates x 8 sentences with full-size random
# models vs synthesis alone). Writes bench/results/gpu_*.json (and copies them to $OUT if set).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(extract_vq train synthesize)
status=0
for row in "${rows[@]}"; do
  case "$row" in
    extract_vq) timeout 120 "$PY" bench/gpu_extract_vq.py --clips 32 --batch-size 32 || status=$? ;;
    train) timeout 150 "$PY" bench/gpu_train.py --steps 3 --batches 1,4,8,16 || status=$? ;;
    synthesize) timeout 150 "$PY" bench/gpu_synthesize.py --frames 128 --batch 16 || status=$? ;;
    evaluate) timeout 420 "$PY" bench/evaluate.py --gpu || status=$? ;;
    *) echo "bench/gpu.sh: unknown row '$row' (extract_vq, train, synthesize, evaluate)" >&2; exit 2 ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  cp bench/results/gpu_*.json bench/results/gpu_*.md "$OUT"/ 2>/dev/null || true
fi
exit "$status"
