"""Benchmark: `fish-speech normalize` vs `fap loudness-norm` (fish-audio-preprocess 0.2.8).

Both run as commands, with the same worker count, on the same generated clips of mixed formats
(WAV, FLAC, MP3; 22.05-48 kHz; mono and stereo). Rows: wall time of each, and the largest sample
difference between the two outputs (WAV/FLAC clips; MP3 separately, since fap re-encodes MP3
output lossily while we write WAV). The baseline lives in its own virtual environment
(bench/.venv-fap), created on first use with the pinned CPU torch installed first.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from common import BENCH_DIR, REPO, Row, report

FAP_VENV = BENCH_DIR / ".venv-fap"
FAP = FAP_VENV / "bin" / "fap"
FAP_PACKAGE = "fish-audio-preprocess==0.2.8"
RATES = (22050, 24000, 32000, 44100, 48000)
FORMATS = ((".wav", "WAV", "PCM_16"), (".flac", "FLAC", "PCM_16"), (".mp3", "MP3", None))


def ensure_fap() -> Path:
    """Create bench/.venv-fap with torch==2.13.0 (CPU) and fish-audio-preprocess 0.2.8 if missing."""
    if FAP.exists():
        return FAP
    print(f"installing {FAP_PACKAGE} into {FAP_VENV} (once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(FAP_VENV)], check=True)
    pip = [str(FAP_VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # torch first and pinned: fap's unpinned torch requirement would otherwise pull a CUDA build.
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, FAP_PACKAGE], check=True)
    return FAP


def make_clips(root: Path, count: int, seed: int = 0) -> dict[str, int]:
    """`count` speech-like clips with transcripts, cycling formats, rates and channel counts."""
    rng = np.random.default_rng(seed)
    made = {ext: 0 for ext, _, _ in FORMATS}
    for i in range(count):
        ext, fmt, subtype = FORMATS[i % len(FORMATS)]
        sr = RATES[(i // len(FORMATS)) % len(RATES)]
        channels = 1 + (i // (len(FORMATS) * len(RATES))) % 2
        seconds = float(rng.uniform(2.0, 8.0))
        t = np.arange(int(seconds * sr)) / sr
        f0 = rng.uniform(90, 220)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 7))
        x = x * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(2, 4) * t)) + 0.01 * rng.standard_normal(t.size)
        x = rng.uniform(0.05, 0.9) * x / np.max(np.abs(x))
        data = np.stack([x * (1 - 0.15 * c) for c in range(channels)], axis=1).astype(np.float32)
        path = root / f"spk{i % 4}" / f"clip{i:04d}{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data, sr, format=fmt, subtype=subtype)
        path.with_suffix(".lab").write_text(f"Clip number {i}.", encoding="utf-8")
        made[ext] += 1
    return made


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def max_difference(ours: Path, fap: Path, raw: Path) -> dict[str, tuple[float, int]]:
    """Per input extension: (largest |ours - fap| sample difference, clips compared)."""
    result: dict[str, tuple[float, int]] = {}
    for src in sorted(raw.rglob("*")):
        if src.suffix not in (".wav", ".flac", ".mp3"):
            continue
        rel = src.relative_to(raw)
        a, _ = sf.read(ours / rel.with_suffix(".wav"), dtype="float64", always_2d=True)
        b, _ = sf.read(fap / rel, dtype="float64", always_2d=True)
        n = min(len(a), len(b))  # MP3 re-encoding can pad a few samples
        diff = float(np.max(np.abs(a[:n] - b[:n]))) if n else 0.0
        worst, seen = result.get(src.suffix, (0.0, 0))
        result[src.suffix] = (max(worst, diff), seen + 1)
    return result


def main(quick: bool = False) -> list[Row]:
    count = 40 if quick else 240
    workers = str(os.cpu_count() or 1)
    work = Path(tempfile.mkdtemp(prefix="bench-normalize-"))
    try:
        raw = work / "raw"
        made = make_clips(raw, count)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        ours_s = timed(
            [
                sys.executable,
                "-m",
                "fish_speech",
                "normalize",
                str(raw),
                str(work / "ours"),
                "--num-workers",
                workers,
            ],
            env,
        )
        try:
            fap = ensure_fap()
        except (subprocess.CalledProcessError, OSError) as e:
            return [
                Row(f"normalize {count} clips: wall time", ours_s, None, "s", f"baseline unavailable: {e}")
            ]
        fap_s = timed(
            [str(fap), "loudness-norm", str(raw), str(work / "fap"), "--recursive", "--num-workers", workers]
        )
        startup = {
            "ours": timed(
                [sys.executable, "-c", "import fish_speech.cli, fish_speech.dataset.normalize, pyloudnorm"],
                env,
            ),
            "fap": timed([str(fap), "--help"]),
        }
        diffs = max_difference(work / "ours", work / "fap", raw)
        mix = ", ".join(f"{n} {ext[1:].upper()}" for ext, n in made.items())
        rows = [
            Row(f"normalize {count} clips ({mix}): wall time", ours_s, fap_s, "s", f"{workers} workers each"),
            Row("normalize: clips per second", count / ours_s, count / fap_s, "clips/s"),
            Row(
                "normalize: fixed start-up cost per process (imports)",
                startup["ours"],
                startup["fap"],
                "s",
                "ours: CLI + pyloudnorm (its scipy.signal import is most of it; every worker pays it);"
                " fap: `fap --help` (imports torch)",
            ),
        ]
        lossless = [diffs[e] for e in (".wav", ".flac") if e in diffs]
        rows.append(
            Row(
                "normalize: max |sample diff| vs fap (WAV+FLAC inputs)",
                max(d for d, _ in lossless),
                None,
                "full scale",
                f"{sum(n for _, n in lossless)} clips; fap writes 16-bit PCM, so 1 LSB = 3.05e-05",
            )
        )
        if ".mp3" in diffs:
            rows.append(
                Row(
                    "normalize: max |sample diff| vs fap (MP3 inputs)",
                    diffs[".mp3"][0],
                    None,
                    "full scale",
                    f"{diffs['.mp3'][1]} clips; fap re-encodes MP3 output (lossy), we write WAV",
                )
            )
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    report("normalize", main(quick="--quick" in sys.argv))
