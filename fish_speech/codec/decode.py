"""Codes -> audio with the codec's decoder (audio previews of extracted or generated codes)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from fish_speech.codec.checkpoint import load_codec
from fish_speech.codec.model import Codec
from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path

log = logging.getLogger(__name__)


def read_codes(path: str | os.PathLike, num_codebooks: int | None = None) -> np.ndarray:
    """Read and check a codes file: integer array shaped (num_codebooks, frames) with frames >= 1.

    `num_codebooks` None accepts any number of rows (checked later against the codec).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: codes file not found")
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read codes ({e})") from e
    rows = "codebooks" if num_codebooks is None else num_codebooks
    if codes.ndim != 2 or codes.shape[1] == 0 or num_codebooks not in (None, codes.shape[0]):
        raise UserError(f"{path}: expected codes shaped ({rows}, frames), got {codes.shape}")
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{path}: expected integer codes, got {codes.dtype}")
    if codes.min() < 0:
        raise UserError(f"{path}: negative code values")
    return codes.astype(np.int64)


def decode_codes(model: Codec, codes: np.ndarray | torch.Tensor) -> np.ndarray:
    """codes (10, F) -> mono float32 waveform (F * 2048,) at 44.1 kHz."""
    codes = torch.as_tensor(codes, dtype=torch.long)
    return model.decode(codes).float().cpu().numpy()[0, 0]


def decode_file(
    codes_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    output: str | os.PathLike,
    device: str = "auto",
    model: Codec | None = None,
) -> float:
    """Decode `codes_path` and write `output` (WAV, 16-bit PCM, atomically); returns its duration in seconds."""
    from fish_speech.devices import resolve_device

    codes = read_codes(codes_path)  # before the codec: a wrong path fails at once, not after the load
    if model is None:
        model = load_codec(checkpoint_path, device=resolve_device(device))
    codes = read_codes(codes_path, model.config.num_codebooks)
    wav = decode_codes(model, codes)
    with atomic_path(output, suffix=".wav") as tmp:
        sf.write(tmp, wav, model.config.sample_rate, subtype="PCM_16", format="WAV")
    log.info("decoded %s (%d frames) to %s", codes_path, codes.shape[1], output)
    return len(wav) / model.config.sample_rate
