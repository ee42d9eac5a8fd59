"""What the commands print: progress and results once each, readable numbers, details only with -v."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fish_speech.cli import main

REPO = Path(__file__).resolve().parent.parent
T2S = Path(__file__).parent / "data" / "t2s"
LONG_FLOAT = re.compile(r"\d\.\d{7,}")  # 17.80265235900879


def _train(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "fish_speech", *extra, "train", "--data", str(T2S / "protos")]
    argv += ["--base-weight", str(T2S / "ckpt"), "--output", str(tmp_path / "run"), "--overwrite"]
    argv += ["--max-steps", "2", "--save-every", "2", "--batch-size", "2", "--max-length", "160"]
    argv += ["--num-workers", "0", "--log-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)


@pytest.mark.slow
def test_train_prints_each_line_once_without_adverts(tmp_path):
    done = _train(tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert "Tip:" not in out and "litlogger" not in out  # Lightning's advert
    assert "LeafSpec" not in out  # torch's deprecation warning about Lightning's internals
    assert "GPU available" not in out  # a detail: behind -v
    # the stored dtype (the golden tiny model.pth is bf16) and the one training computes in
    assert "stored as bfloat16, loaded as float32" in out
    assert "computed in float32" in out
    assert re.search(r"\d+ training samples were cut to --max-length 160", done.stdout)
    summary_line = next(line for line in done.stdout.splitlines() if line.startswith("trained 2 steps"))
    assert not LONG_FLOAT.search(summary_line), summary_line

    verbose = _train(tmp_path, "-v")
    assert verbose.returncode == 0, verbose.stderr
    lines = (verbose.stdout + verbose.stderr).splitlines()
    gpu = [line for line in lines if "GPU available" in line]
    assert len(gpu) == 1, gpu  # once, not once per handler
    assert not any("Tip:" in line for line in lines)


def test_silent_reason_is_said_once(tmp_path, write_clip, capsys):
    raw = tmp_path / "raw"
    write_clip(raw / "spk" / "ok.wav", seconds=1.0)
    write_clip(raw / "spk" / "zeros.wav", data=np.zeros((44100, 1), dtype=np.float32))
    assert main(["normalize", str(raw), str(tmp_path / "out"), "--num-workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "zeros.wav: silent: all zeros" in out
    assert "silent: silent" not in out


def test_extract_vq_progress_stays_in_range_when_clips_are_skipped(tmp_path):
    """Skipped clips shrink the bar's total; float seconds made n exceed it (TqdmWarning, negative ETA)."""
    import warnings

    import soundfile as sf
    from tqdm import TqdmWarning

    from fish_speech.codec.extract_vq import extract_vq

    data = tmp_path / "data"
    data.mkdir()
    # lengths for which (a + b + c) - b < a + c in float seconds
    for name, samples in (("a", 35986), ("b", 20928), ("c", 32773)):
        wav = np.full((samples, 1), 0.1, dtype=np.float32)
        if name == "b":
            wav[100] = np.nan  # decodes, then skipped as non-finite: its seconds leave the total
        sf.write(data / f"{name}.wav", wav, 44100, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TqdmWarning)
        summary = extract_vq(data, T2S.parent / "codec" / "codec.pth", device="cpu", num_workers=0)
    assert summary["written"] == 2 and len(summary["skipped"]) == 1
