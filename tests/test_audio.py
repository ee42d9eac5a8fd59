"""fish_speech.audio: decoding, mono mix and the upstream-exact windowed-sinc resampler."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fish_speech.audio import (
    AUDIO_EXTENSIONS,
    AudioReadError,
    ResampleError,
    _sinc_kernel,
    audio_stats,
    downmix,
    load_audio,
    resample,
    resampled_length,
)
from fish_speech.errors import UserError

AUDIO_DATA = Path(__file__).resolve().parent / "data" / "audio"
GOLDEN = json.loads((AUDIO_DATA / "resampled.json").read_text())


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_resample_is_bit_identical_to_upstream(name):
    """Upstream's resampled waveform (golden codec intermediates): same length, same bytes."""
    info = GOLDEN[name]
    wav, sr = load_audio(AUDIO_DATA / name)
    assert (sr, wav.shape) == (info["sample_rate"], (info["channels"], info["samples"]))
    out = resample(torch.from_numpy(downmix(wav)), sr, 44100)
    assert out.dtype == torch.float32
    assert out.shape[-1] == info["samples_44k"] == resampled_length(info["samples"], sr, 44100)
    digest = hashlib.sha256(out.numpy().astype("<f4").tobytes()).hexdigest()
    assert digest == info["audio_44k_sha256"]


@pytest.mark.parametrize(
    ("sr", "n", "expected", "exact_ceil"),
    [  # spec/codec.md §9.1: float32 rounding of the quotient before the ceil
        (16000, 56041, 154463, 154464),
        (16000, 100041, 275738, 275739),
        (32000, 100041, 137869, 137870),
        (8000, 100041, 551476, 551477),
        (48000, 142683, 131090, 131091),
        (22050, 74724, 149448, 149448),
        (44100, 1234, 1234, 1234),
    ],
)
def test_resampled_length_follows_float32_rule(sr, n, expected, exact_ceil):
    assert resampled_length(n, sr, 44100) == expected
    assert -(-n * 44100 // sr) == exact_ceil  # the table really is about the rounding case


def test_resample_output_length_matches_rule_on_rounding_case():
    x = torch.zeros(142683)
    assert resample(x, 48000, 44100).shape[-1] == 131090


def test_identity_at_equal_rates():
    x = torch.randn(2, 3, 1000)
    y = resample(x, 44100, 44100)
    assert torch.equal(x, y)


@pytest.mark.parametrize(("sr_in", "sr_out"), [(16000, 44100), (48000, 44100), (44100, 22050)])
def test_sine_keeps_its_frequency(sr_in, sr_out):
    freq = 1000.0
    n = sr_in  # one second
    t = torch.arange(n, dtype=torch.float64) / sr_in
    x = torch.sin(2 * torch.pi * freq * t).float()
    y = resample(x, sr_in, sr_out)
    assert y.shape[-1] == resampled_length(n, sr_in, sr_out)
    core = y[200:-200].double()  # away from the zero-padded edges
    expected = torch.sin(2 * torch.pi * freq * (torch.arange(y.shape[-1], dtype=torch.float64) / sr_out))
    assert torch.max(torch.abs(core - expected[200:-200])) < 2e-3
    spectrum = torch.fft.rfft(core * torch.hann_window(core.shape[-1], dtype=torch.float64))
    peak_hz = torch.argmax(spectrum.abs()).item() * sr_out / core.shape[-1]
    assert abs(peak_hz - freq) < 2.0


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(0)
    lengths = [16000, 9001, 12345]
    items = [torch.from_numpy(rng.standard_normal(n).astype(np.float32) * 0.3) for n in lengths]
    batch = torch.full((3, max(lengths)), 7.0)  # garbage padding: `lengths` must mask it
    for i, x in enumerate(items):
        batch[i, : x.shape[0]] = x
    out = resample(batch, 16000, 44100, lengths=torch.tensor(lengths))
    assert out.shape == (3, resampled_length(max(lengths), 16000, 44100))
    for i, x in enumerate(items):
        one = resample(x, 16000, 44100)
        cut = out[i, : resampled_length(lengths[i], 16000, 44100)]
        assert cut.shape == one.shape
        assert torch.equal(cut, one)


def test_leading_dims_and_dtype_are_kept():
    x = torch.randn(2, 2, 800, dtype=torch.float64)
    y = resample(x, 8000, 16000)
    assert y.shape == (2, 2, 1600) and y.dtype == torch.float64
    # float64 convolution may block differently for a batch: equal to rounding, not bit for bit
    torch.testing.assert_close(y[1, 0], resample(x[1, 0], 8000, 16000), rtol=0, atol=1e-12)
    assert resample(x.to(torch.bfloat16), 8000, 16000).dtype == torch.bfloat16


def test_kernel_is_cached():
    a = _sinc_kernel(160, 441, "cpu", torch.float32)
    b = _sinc_kernel(160, 441, "cpu", torch.float32)
    assert a[0] is b[0]


def test_absurd_rate_pair_is_a_clear_error():
    with pytest.raises(ResampleError, match="44100"):
        resample(torch.zeros(100), 44101, 44100)
    assert issubclass(ResampleError, UserError)


def test_load_audio_scales_pcm16_and_keeps_channels(tmp_path):
    pcm = np.array([[-32768, 16384], [0, -16384], [32767, 1]], dtype=np.int16)
    path = tmp_path / "x.wav"
    sf.write(path, pcm, 8000, subtype="PCM_16")
    wav, sr = load_audio(path)
    assert sr == 8000 and wav.dtype == np.float32 and wav.shape == (2, 3)
    assert wav[0, 0] == -1.0 and wav[1, 0] == 0.5 and wav[0, 2] == 32767 / 32768


@pytest.mark.parametrize("suffix", [".flac", ".ogg", ".mp3"])
def test_load_audio_compressed_formats(tmp_path, suffix, speech_like):
    data = speech_like(0.5, 22050, channels=2)
    path = tmp_path / f"x{suffix}"
    sf.write(path, data, 22050)
    wav, sr = load_audio(path)
    assert sr == 22050 and wav.shape[0] == 2
    assert abs(wav.shape[1] - data.shape[0]) < 3000  # mp3 adds encoder delay/padding


@pytest.mark.parametrize("name", ["broken.wav", "clip.m4a", "empty.flac"])
def test_unreadable_audio_names_the_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" if name.endswith(".wav") else b"\x00" * 10)
    with pytest.raises(AudioReadError, match=name):
        load_audio(path)
    with pytest.raises(AudioReadError, match=name):
        audio_stats(path)


def test_truncated_flac_is_detected(tmp_path, speech_like):
    path = tmp_path / "cut.flac"
    sf.write(path, speech_like(2.0, 44100), 44100)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] + b"\xff" * 4096)
    with pytest.raises(AudioReadError, match="cut.flac"):
        audio_stats(path)


def test_downmix_equals_torch_mean_for_numpy_and_tensor():
    x = np.random.default_rng(1).standard_normal((3, 1001)).astype(np.float32)
    ref = torch.from_numpy(x).mean(dim=0)
    assert torch.equal(downmix(torch.from_numpy(x)), ref)
    assert np.array_equal(downmix(x), ref.numpy())
    mono = x[0]
    assert downmix(mono) is mono


def test_audio_stats_counts_peak_clipping_and_nan(tmp_path):
    data = np.zeros((1000, 2), dtype=np.float32)
    data[10, 0] = 1.0
    data[11, 1] = -1.0
    data[12, 0] = 0.5
    data[20, 1] = np.nan
    path = tmp_path / "s.wav"
    sf.write(path, data, 16000, subtype="FLOAT")
    info = audio_stats(path)
    assert (info.sample_rate, info.channels, info.frames) == (16000, 2, 1000)
    assert info.peak == 1.0 and info.peak_dbfs == 0.0
    assert info.clipped == 2 and info.clipping_share == 2 / 2000
    assert info.non_finite == 1
    assert info.duration == 1000 / 16000


def test_audio_extensions_are_lower_case_suffixes():
    assert {".wav", ".flac", ".mp3", ".ogg"} <= AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_importing_audio_does_not_import_torch():
    code = "import sys, fish_speech.audio; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resample_on_cuda_matches_cpu():
    x = torch.randn(4, 48000)
    cpu = resample(x, 48000, 44100)
    gpu = resample(x.cuda(), 48000, 44100)
    assert gpu.device.type == "cuda" and gpu.shape == cpu.shape
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    assert resample(x.cuda().bfloat16(), 48000, 44100).dtype == torch.bfloat16
