"""Random tiny checkpoints in the real base-model layout, for tests, the demo and `fetch-weights tiny`.

The text-to-semantic config is the golden vectors' tiny one with the codebook layout widened to the
codec's (10 codebooks of up to 4096 codes), so codes extracted with the tiny codec train the tiny model.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fish_speech.codec.model import CodecConfig
from fish_speech.text2semantic.model import ModelConfig

CODEC_FILE = "codec.pth"


def tiny_codec_config() -> CodecConfig:
    """The codec config of a tiny checkpoint (the golden tiny codec)."""
    return CodecConfig.tiny()


def tiny_model_config() -> ModelConfig:
    """The text-to-semantic config of a tiny checkpoint, matching `tiny_codec_config()`'s codes."""
    codec = tiny_codec_config()
    return dataclasses.replace(
        ModelConfig.tiny(),
        num_codebooks=1 + codec.n_codebooks,
        codebook_size=max(codec.semantic_codebook_size, codec.codebook_size),
    )


def write_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write `model.pth`, `config.json`, `tokenizer.tiktoken`, `special_tokens.json` and `codec.pth`
    with random weights (deterministic for a seed) into `out_dir`; every file is written atomically."""
    from fish_speech.codec.checkpoint import write_random_codec
    from fish_speech.text2semantic.checkpoint import write_random_t2s

    out = Path(out_dir)
    write_random_t2s(out, tiny_model_config(), seed=seed)
    write_random_codec(out / CODEC_FILE, tiny_codec_config(), seed=seed)
    return out
