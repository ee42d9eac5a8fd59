"""Audio I/O: decode with soundfile, mono mix, and upstream's windowed-sinc resampler in torch.

Decoding and the statistics used by `validate` need only numpy and soundfile. The torch functions
(`downmix` on tensors, `resample`) import torch lazily so that the data commands start fast.

The resampler follows upstream's `tools/vqgan/extract_vq.py` preprocessing (the algorithm of torchaudio's `functional.resample` with its
defaults: Hann window, lowpass filter width 6, rolloff 0.99) step by step in the waveform's dtype, so
that on CPU float32 it reproduces upstream's resampled waveforms bit for bit, and the output length
follows torchaudio's float32 rounding of the output length.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from fish_speech.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Lower-case suffixes treated as audio by discovery. soundfile (libsndfile >= 1.1) decodes
# wav/flac/mp3/ogg/aiff; the others are listed so that discovery reports them as unreadable
# instead of silently ignoring a user's clips.
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".wma", ".aac", ".aiff", ".aif", ".aifc"}
)

# Resampler constants (torchaudio defaults used by upstream's extract_vq).
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99
# Refuse rate pairs whose polyphase kernel would be absurdly large (e.g. 44101 Hz -> 44100 Hz
# has gcd 1: 44100 phases x 88 k taps). Upstream would try and run out of memory.
MAX_KERNEL_ELEMENTS = 1 << 25

# Read statistics in blocks so that a long file never has to fit in memory as float32 at once.
_STATS_BLOCK_FRAMES = 1 << 18


class AudioReadError(UserError):
    """An audio file that cannot be decoded (corrupt, truncated, or a format soundfile lacks)."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message  # the decoder's complaint, without the path


class ResampleError(UserError):
    """A sample-rate pair the windowed-sinc resampler cannot handle sensibly."""


def _read_error(path: str | os.PathLike, e: Exception) -> AudioReadError:
    # LibsndfileError.error_string is libsndfile's message without soundfile's "Error opening 'PATH': ".
    msg = (getattr(e, "error_string", None) or str(e)).strip().rstrip(".") or type(e).__name__
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        msg = "empty file, 0 bytes"
    elif "does not exist" in msg and os.path.isfile(path):
        msg = "format not recognised"  # libsndfile's odd wording for e.g. a non-MP3 named .mp3
    return AudioReadError(f"{os.fspath(path)}: cannot read audio ({msg})", reason=msg)


def load_audio(path: str | os.PathLike, dtype: str = "float32") -> tuple[np.ndarray, int]:
    """Decode `path` to an array shaped (channels, samples) at the file's native sample rate.

    Integer PCM is scaled by 1/2^(bits-1) (libsndfile's normalisation, as torchaudio's soundfile
    backend); float files pass through unchanged. Raises `AudioReadError` naming the file.
    """
    try:
        data, sr = sf.read(os.fspath(path), dtype=dtype, always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError, RuntimeError, TypeError, ...
        raise _read_error(path, e) from e
    return np.ascontiguousarray(data.T), int(sr)


@dataclass(frozen=True)
class AudioInfo:
    """What `audio_stats` measures for one file (a full decode, block by block)."""

    sample_rate: int
    channels: int
    frames: int
    peak: float  # max |x| over all channels (NaN-free samples only)
    clipped: int  # samples (over all channels) with |x| >= CLIP_LEVEL
    non_finite: int  # NaN or +-inf samples

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0

    @property
    def peak_dbfs(self) -> float:
        return 20.0 * math.log10(self.peak) if self.peak > 0 else -math.inf

    @property
    def clipping_share(self) -> float:
        total = self.frames * self.channels
        return self.clipped / total if total else 0.0


# A sample counts as clipped at or above the largest 16-bit PCM value (32767/32768).
CLIP_LEVEL = 32767 / 32768


def audio_stats(path: str | os.PathLike) -> AudioInfo:
    """Decode `path` fully and return rate, channels, length, peak, clipping and NaN counts.

    Decoding everything (not just the header) is what detects truncated or corrupt files.
    Raises `AudioReadError` naming the file.
    """
    try:
        with sf.SoundFile(os.fspath(path)) as f:
            sr, channels = int(f.samplerate), int(f.channels)
            frames = peak = clipped = non_finite = 0
            while True:
                block = f.read(_STATS_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                frames += block.shape[0]
                b_peak, b_clipped, b_non_finite = _sample_stats(block)
                peak, clipped, non_finite = max(peak, b_peak), clipped + b_clipped, non_finite + b_non_finite
    except Exception as e:
        raise _read_error(path, e) from e
    return AudioInfo(sr, channels, frames, peak, clipped, non_finite)


def array_stats(data: np.ndarray, sample_rate: int) -> AudioInfo:
    """`audio_stats` of samples already decoded: `data` shaped (frames,) or (frames, channels)."""
    channels = 1 if data.ndim == 1 else int(data.shape[1])
    return AudioInfo(int(sample_rate), channels, int(data.shape[0]), *_sample_stats(data))


def _sample_stats(block: np.ndarray) -> tuple[float, int, int]:
    """(peak |x| over finite samples, samples at or above CLIP_LEVEL, NaN/inf samples)."""
    if block.size == 0:
        return 0.0, 0, 0
    finite = np.isfinite(block)
    non_finite = 0
    if not finite.all():
        non_finite = int(block.size - np.count_nonzero(finite))
        block = np.where(finite, block, 0.0)
    a = np.abs(block)
    return float(a.max()), int(np.count_nonzero(a >= CLIP_LEVEL)), non_finite


def downmix(wav: Any) -> Any:
    """Mono mix of a (channels, samples) array or tensor: the float32 mean over dim 0.

    Returns shape (samples,). Matches upstream's `wav.mean(0)` on a float32 torch tensor; for a
    numpy array the mean is taken by torch as well, so both give identical bits.
    """
    if isinstance(wav, np.ndarray):
        import torch

        if wav.ndim == 1:
            return wav
        return downmix(torch.from_numpy(np.ascontiguousarray(wav))).numpy()
    if wav.ndim == 1:
        return wav
    return wav.mean(dim=0)


def _reduced_rates(orig_sr: int, new_sr: int) -> tuple[int, int]:
    if orig_sr <= 0 or new_sr <= 0:
        raise ResampleError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    return int(orig_sr) // g, int(new_sr) // g


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    """Samples after resampling `n` samples: ceil(float32(n_red * N / o_red)) (torchaudio's float32 arithmetic).

    The quotient is rounded to float32 before the ceil, as upstream does, so for some lengths the
    result is one sample shorter than the exact ceil.
    """
    if orig_sr == new_sr:
        return int(n)
    o, m = _reduced_rates(orig_sr, new_sr)
    return int(math.ceil(float(np.float32(m * int(n) / o))))


def check_resample_rates(orig_sr: int, new_sr: int) -> None:
    """Raise `ResampleError` when resampling `orig_sr` -> `new_sr` would need an absurd kernel."""
    if orig_sr == new_sr:
        return
    o, n = _reduced_rates(orig_sr, new_sr)
    width = math.ceil(LOWPASS_FILTER_WIDTH * o / (min(o, n) * ROLLOFF))
    if n * (2 * width + o) > MAX_KERNEL_ELEMENTS:
        raise ResampleError(
            f"resampling {orig_sr} Hz to {new_sr} Hz needs a {n} x {2 * width + o} filter kernel; "
            "convert the audio to a common sample rate (e.g. 44100 or 48000 Hz) first"
        )


@functools.lru_cache(maxsize=32)
def _sinc_kernel(o: int, n: int, device: str, dtype: Any) -> tuple[torch.Tensor, int]:
    """Polyphase windowed-sinc kernel (n phases, 1, 2w + o taps) and the half-width w.

    Built in `dtype` on `device` in the operation order of torchaudio's `_get_sinc_resample_kernel`: the order decides
    the last bits of the kernel and therefore bit parity with upstream.
    """
    import torch

    base = min(o, n) * ROLLOFF
    width = math.ceil(LOWPASS_FILTER_WIDTH * o / base)
    idx = torch.arange(-width, width + o, dtype=dtype, device=device)[None, None] / o
    t = torch.arange(0, -n, -1, dtype=dtype, device=device)[:, None, None] / n + idx
    t *= base
    t = t.clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * math.pi / LOWPASS_FILTER_WIDTH / 2) ** 2
    t *= math.pi
    scale = base / o
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t)
    kernel *= window * scale
    return kernel, width


def resample(
    wav: torch.Tensor, orig_sr: int, new_sr: int, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Resample along the last dim from `orig_sr` to `new_sr`, batched over leading dims.

    Runs on `wav`'s device in its dtype (the kernel is cached per rate pair, device and dtype).
    For one signal of N samples the output has `resampled_length(N, orig_sr, new_sr)` samples.
    For a right-padded batch the output length is that of the padded input; cut each item to
    `resampled_length(lengths[i], ...)`. When `lengths` (shape = leading dims) is given, samples
    at or past each item's length are zeroed first, so whatever the padding held cannot leak
    into the item's resampled samples (upstream resamples each clip alone, padded with zeros).
    """
    import torch
    import torch.nn.functional as F

    if not torch.is_floating_point(wav):
        raise TypeError(f"resample needs a floating-point tensor, got {wav.dtype}")
    if lengths is not None:
        pos = torch.arange(wav.shape[-1], device=wav.device)
        keep = pos < lengths.to(wav.device).unsqueeze(-1)
        wav = wav * keep.to(wav.dtype)
    if orig_sr == new_sr:
        return wav
    check_resample_rates(orig_sr, new_sr)
    o, n = _reduced_rates(orig_sr, new_sr)
    kernel, width = _sinc_kernel(o, n, str(wav.device), wav.dtype)

    shape = wav.shape
    length = shape[-1]
    flat = wav.reshape(-1, length)
    padded = F.pad(flat, (width, width + o))
    out = F.conv1d(padded[:, None], kernel, stride=o)  # (B, n, frames)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)  # interleave phases, phase-minor
    out = out[..., : resampled_length(length, orig_sr, new_sr)]
    return out.reshape(*shape[:-1], out.shape[-1])
