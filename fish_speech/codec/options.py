"""The codec's fixed rates and `extract-vq`'s defaults, declared once.

No torch here: the data commands (validate, build-dataset) and pipeline.py read them at start-up.
"""

from __future__ import annotations

SAMPLE_RATE = 44100  # the codec's input rate (`CodecConfig.sample_rate` defaults to it)
SAMPLES_PER_FRAME = 2048  # input samples per code frame of the released codec (`CodecConfig.frame_length`)

BATCH_SIZE = 16  # clips per batch
# float32 reproduces upstream's codes; bfloat16 autocast is faster on GPUs but may change codes
PRECISIONS = ("float32", "bfloat16")
DEFAULT_PRECISION = "float32"
