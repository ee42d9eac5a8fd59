"""Benchmark: `build-dataset` time per hour of audio at 1x, 4x and 16x data.

1x = 100 clips of 4-12 s in 4 speaker folders (about 0.22 h), with S1-mini-shaped codes
(10 codebooks, 21.5 frames per second). Each size runs as the command with all cores and, as the
baseline, with one worker (upstream's build is a one-task-per-group pool; one worker is the
serial reference). Both must write identical bytes, which is checked.
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
from common import REPO, Row, growth_row, report

FRAMES_PER_SECOND = 44100 / 2048
BASE_CLIPS = 100


def make_codes(root: Path, clips: int, seed: int = 0) -> float:
    """`clips` codes files + transcripts under `root`; returns the audio hours they stand for."""
    rng = np.random.default_rng(seed)
    frames_total = 0
    for i in range(clips):
        frames = int(rng.uniform(4, 12) * FRAMES_PER_SECOND)
        folder = root / f"spk{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        codes = np.empty((10, frames), dtype=np.int64)
        codes[0] = rng.integers(0, 4096, frames)
        codes[1:] = rng.integers(0, 1024, (9, frames))
        np.save(folder / f"clip{i:05d}.npy", codes)
        (folder / f"clip{i:05d}.lab").write_text(
            f"This is the transcript of clip number {i}, fairly ordinary."
        )
        frames_total += frames
    return frames_total / FRAMES_PER_SECOND / 3600


def run(data: Path, out: Path, workers: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "fish_speech", "build-dataset", "--input", str(data), "--output", str(out)]
    start = time.perf_counter()
    subprocess.run([*cmd, "--num-workers", str(workers)], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main(quick: bool = False) -> list[Row]:
    cores = os.cpu_count() or 1
    rows = []
    per_hour: dict[int, tuple[float, float]] = {}
    work = Path(tempfile.mkdtemp(prefix="bench-build-dataset-"))
    try:
        for scale in (1, 4) if quick else (1, 4, 16):
            data = work / f"x{scale}"
            hours = make_codes(data, BASE_CLIPS * scale)
            ours = run(data, work / f"ours{scale}", cores)
            serial = run(data, work / f"serial{scale}", 1)
            same = all(
                (work / f"ours{scale}" / p.name).read_bytes() == p.read_bytes()
                for p in (work / f"serial{scale}").iterdir()
            )
            if not same:
                raise RuntimeError(f"{scale}x: {cores} workers and 1 worker wrote different bytes")
            per_hour[scale] = (ours / hours, serial / hours)
            rows.append(
                Row(
                    f"build-dataset {scale}x ({BASE_CLIPS * scale} clips, {hours:.2f} h): time per audio hour",
                    ours / hours,
                    serial / hours,
                    "s/h",
                    f"{cores} workers vs 1 worker (baseline); identical bytes",
                )
            )
            shutil.rmtree(data)
        rows.append(growth_row("build-dataset", per_hour, "1 worker"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    report("build_dataset", main(quick="--quick" in sys.argv))
