"""A generated corpus of bad (and a few good) inputs for the whole data path.

Every case writes its files under `root/<speaker>/` and carries a unique marker word in its
transcript, so the test can tell from the final protos which clips made it through, and a file
name that must be named by some step when the clip is left out.

`in_protos`: True = must reach the protos, False = must not, None = either (a valid input that a
step may convert, or a defensible skip). `named`: the clip's file name must appear in some step's
output (a recorded skip or a clear error) whenever it does not reach the protos.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf


@dataclass(frozen=True)
class Case:
    """One input case of the corpus."""

    name: str  # also the clip's file stem (unique) and the marker word of its transcript
    build: Callable[
        [Path, Case], Path | None
    ]  # writes the case under the corpus root; returns the audio path
    in_protos: bool | None
    named: bool = True
    slow: bool = False

    @property
    def marker(self) -> str:
        return f"mk{self.name.replace('_', '')}"


def tone(seconds: float, sr: int, channels: int = 1, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A deterministic speech-like signal, (samples, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sr))) / sr
    f0 = 100.0 + 60.0 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6.28) / k for k in range(1, 6))
    x = x * (0.5 - 0.5 * np.cos(2 * np.pi * 3.0 * t)) + 0.01 * rng.standard_normal(t.size)
    x = level * x / max(float(np.max(np.abs(x))), 1e-9)
    return np.stack([x * (1.0 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


def text_for(case: Case) -> str:
    return f"This is {case.marker}, a short test sentence."


def _audio(folder: str, ext: str = ".wav", seconds: float = 1.0, sr: int = 44100, channels: int = 1, **kw):
    """A builder writing one audio file with a transcript (kw: data=, subtype=, lab=bytes|None)."""

    def build(root: Path, case: Case) -> Path:
        path = root / folder / f"{case.name}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = kw.get("data")
        if data is None:
            data = tone(seconds, sr, channels, seed=zlib.crc32(case.name.encode()) % 1000)
        sf.write(path, data, sr, subtype=kw.get("subtype"), format=kw.get("format"))
        lab = kw.get("lab", text_for(case).encode())
        if lab is not None:
            path.with_suffix(".lab").write_bytes(lab)
        return path

    return build


def _raw_bytes(folder: str, ext: str, content: Callable[[], bytes]):
    def build(root: Path, case: Case) -> Path:
        path = root / folder / f"{case.name}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content())
        path.with_suffix(".lab").write_text(text_for(case), encoding="utf-8")
        return path

    return build


def _truncated_flac(root: Path, case: Case) -> Path:
    path = _audio("bad")(root, case)
    flac = path.with_suffix(".flac")
    sf.write(flac, tone(2.0, 44100), 44100, format="FLAC")
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size * 6 // 10])
    path.unlink()
    return flac


def _wav_overclaims(root: Path, case: Case) -> Path:
    """A PCM WAV whose RIFF and data chunk sizes claim ten times the samples present."""
    path = _audio("bad", subtype="PCM_16")(root, case)
    raw = bytearray(path.read_bytes())
    data_at = raw.index(b"data")
    size = struct.unpack_from("<I", raw, data_at + 4)[0]
    struct.pack_into("<I", raw, data_at + 4, size * 10)
    struct.pack_into("<I", raw, 4, len(raw) - 8 + size * 9)
    path.write_bytes(bytes(raw))
    return path


def _non_finite(value: float):
    def build(root: Path, case: Case) -> Path:
        data = tone(1.0, 44100)
        data[1000:1100] = value
        return _audio("bad", data=data, subtype="FLOAT")(root, case)

    return build


def _duplicate_stem(root: Path, case: Case) -> Path:
    path = _audio("bad")(root, case)
    sf.write(path.with_suffix(".flac"), tone(1.0, 44100, seed=5), 44100, format="FLAC")
    return path


def _symlink_outside(root: Path, case: Case) -> Path:
    outside = root.parent / f"{root.name}-outside"
    target = _audio(".", seconds=1.0)(outside, case)
    link = root / "bad" / target.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    link.with_suffix(".lab").write_text(text_for(case), encoding="utf-8")
    return link


def _long_transcript(root: Path, case: Case) -> Path:
    words = (text_for(case) + " ") * (1024 * 1024 // (len(text_for(case)) + 1) + 1)
    return _audio("bad", lab=words[: 1024 * 1024].encode())(root, case)


def _tmp_leftover(root: Path, case: Case) -> Path:
    """What a writer killed mid-write leaves: a `.tmp-*` file that must never be picked up."""
    path = _audio("good")(root, case)
    hidden = path.with_name(f".tmp-{path.name}.x1y2")
    path.rename(hidden)
    path.with_suffix(".lab").unlink()
    hidden.with_suffix(".lab").write_text(text_for(case))
    return hidden


def _unicode_name(root: Path, case: Case) -> Path:
    path = _audio("good voix", seconds=1.2)(root, case)
    fancy = path.with_name(f"café {case.name} 声音.wav")
    path.rename(fancy)
    path.with_suffix(".lab").rename(fancy.with_suffix(".lab"))
    return fancy


CASES: list[Case] = [
    # transcripts
    Case("lab_empty", _audio("bad", lab=b""), in_protos=False),
    Case("lab_missing", _audio("bad", lab=None), in_protos=False),
    Case(
        "lab_latin1", _audio("bad", lab="Ceci est mklablatin1, très café.".encode("latin-1")), in_protos=False
    ),
    Case("lab_blank", _audio("bad", lab=b"  \n\t \n"), in_protos=False),
    Case(
        "lab_tags_crlf",
        _audio("good", lab=b"Hello {laugh} mklabtagscrlf <b>bold</b>\r\nsecond line.\r\n"),
        True,
    ),
    Case("lab_1mb", _long_transcript, in_protos=None),
    # broken audio
    Case("audio_empty", _raw_bytes("bad", ".wav", lambda: b""), in_protos=False),
    Case("audio_garbage", _raw_bytes("bad", ".wav", lambda: os.urandom(4096)), in_protos=False),
    Case("audio_fake_mp3", _raw_bytes("bad", ".mp3", lambda: b"ID3" + bytes(2000)), in_protos=False),
    Case("audio_truncated", _truncated_flac, in_protos=None),
    Case("wav_overclaims", _wav_overclaims, in_protos=None),
    Case("samples_nan", _non_finite(float("nan")), in_protos=False),
    Case("samples_inf", _non_finite(float("inf")), in_protos=False),
    Case("silence", _audio("bad", data=np.zeros((44100, 1), np.float32)), in_protos=False),
    # unusual but valid audio
    Case("rate_8k", _audio("odd", sr=8000), in_protos=None),
    Case("rate_96k", _audio("odd", sr=96000), in_protos=None),
    Case("six_channels", _audio("odd", channels=6), in_protos=None),
    Case("very_short", _audio("odd", seconds=0.01), in_protos=None),
    Case("clipped", _audio("odd", data=np.sign(tone(1.0, 44100)) * 1.0), in_protos=None),
    Case("long_12min", _audio("odd", seconds=720.0, sr=16000, subtype="PCM_16"), in_protos=None, slow=True),
    # layout
    Case("dup_stem", _duplicate_stem, in_protos=None),
    Case("symlink_out", _symlink_outside, in_protos=False),
    Case("tmp_leftover", _tmp_leftover, in_protos=False, named=False),
    Case("unicode_name", _unicode_name, in_protos=True),
    Case("upper_ext", _audio("odd", ext=".WAV"), in_protos=None),
    # good clips in several formats
    Case("good_wav24", _audio("good", seconds=1.5, subtype="PCM_24"), in_protos=True),
    Case("good_flac", _audio("good", ext=".flac", sr=48000, seconds=1.3), in_protos=True),
    Case("good_mp3", _audio("good", ext=".mp3", sr=22050, channels=2, seconds=1.4), in_protos=True),
    Case("good_nested", _audio("good/deeper", seconds=1.1), in_protos=True),
]


def build_corpus(root: Path, include_slow: bool = False) -> dict[str, Path | None]:
    """Write every case under `root`; return case name -> its audio path."""
    root.mkdir(parents=True, exist_ok=True)
    return {case.name: case.build(root, case) for case in CASES if include_slow or not case.slow}
