#!/usr/bin/env bash
# One prepared GPU run for a lent accelerator (full-size random weights; must finish in < 8 min on one
# large GPU): extract-vq throughput (fp32 = upstream's codes, and bf16) vs a naive per-file loop, then
# LoRA training tokens/s and MFU in bf16 vs upstream's bf16-true batch-4 settings, and full fine-tuning
# (--mode full, fp32 master weights, bf16-mixed) vs LoRA at batch 4, then synthesis
# frames/s in bf16 at batch 1 with and without --compile (CUDA graphs) and at batch 16, then evaluate
# (6 candidates x 8 sentences with full-size random models) vs synthesis alone (their timeouts allow 5 and 7 more minutes).
# Writes bench/results/gpu_extract_vq.json, gpu_train.json, gpu_synthesize.json and gpu_evaluate.json
# (and copies them to $OUT if set).
#   PYTHON=python3 bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: no CUDA device')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
status=0
timeout 210 "$PY" bench/gpu_extract_vq.py --clips 64 --batch-size 32 || status=$?
timeout 240 "$PY" bench/gpu_train.py --steps 5 || status=$?
timeout 300 "$PY" bench/gpu_synthesize.py --frames 256 --batch 16 || status=$?
# evaluate: 6 candidates x 8 sentences, S1-mini + the default ASR/speaker model sizes (random weights)
timeout 420 "$PY" bench/evaluate.py --gpu || status=$?
if [ -n "${OUT:-}" ]; then
  cp bench/results/gpu_*.json bench/results/gpu_*.md "$OUT"/ 2>/dev/null || true
fi
exit "$status"
