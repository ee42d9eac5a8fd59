"""The codec's fixed rates and the settings of `extract-vq`, each declared once.

No torch here: the data commands (validate, build-dataset), `fish-speech extract-vq --help` and
pipeline.py read them at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from fish_speech.options import option

SAMPLE_RATE = 44100  # the codec's input rate (`CodecConfig.sample_rate` defaults to it)
SAMPLES_PER_FRAME = 2048  # input samples per code frame of the released codec (`CodecConfig.frame_length`)
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class ExtractOptions:
    """The settings of an extract-vq run (the `fish-speech extract-vq` flags are generated from them)."""

    output_dir: str | None = option(
        None,
        "write CODES/<rel>/<stem>.npy (rel: the clip's folder under DATA_DIR) instead of beside each clip; "
        "DATA_DIR is then only read",
        metavar="CODES",
    )
    batch_size: int = option(16, "clips per batch")
    num_workers: int = option(1, "DataLoader processes decoding audio while the model runs")
    device: str = option("auto", "auto (cuda if available), cpu, cuda or cuda:N")
    overwrite: bool = option(False, "re-encode clips whose .npy already exists")
    shard_index: int = option(0, "this process's shard", metavar="I")
    num_shards: int = option(1, "number of shards: sorted files[I::N]", metavar="N")
    precision: str = option(
        "float32",
        "float32 reproduces upstream's codes; bfloat16 autocast is faster on GPUs but may change codes",
        choices=PRECISIONS,
    )
