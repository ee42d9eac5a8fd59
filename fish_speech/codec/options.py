"""Defaults of `extract-vq`, declared once (no torch here: the command and pipeline.py read them)."""

from __future__ import annotations

BATCH_SIZE = 16  # clips per batch
# float32 reproduces upstream's codes; bfloat16 autocast is faster on GPUs but may change codes
PRECISIONS = ("float32", "bfloat16")
DEFAULT_PRECISION = "float32"
