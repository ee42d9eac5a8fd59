"""`fish-speech normalize`: fap loudness-norm numbers, skips, atomic and idempotent outputs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
import soundfile as sf

from fish_speech.cli import main
from fish_speech.dataset import normalize as norm
from fish_speech.dataset.normalize import Settings, normalize_dir
from fish_speech.errors import UserError


def expected_fap(path: Path, peak: float = -1.0, loudness: float = -23.0) -> np.ndarray:
    """What fap loudness-norm computes, straight from pyloudnorm (float64, before 16-bit PCM)."""
    data, sr = sf.read(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = pyloudnorm.normalize.peak(data, peak)
        measured = pyloudnorm.Meter(sr, block_size=0.4).integrated_loudness(data)
        return pyloudnorm.normalize.loudness(data, measured, loudness)


def outputs(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def test_demo_voice_matches_pyloudnorm(demo_voice, tmp_path):
    out = tmp_path / "out"
    summary = normalize_dir(demo_voice, out, progress=False)
    assert summary.counts() == {"written": 16}
    for src in sorted(p for p in demo_voice.rglob("*") if p.is_file() and p.suffix != ".lab"):
        rel = src.relative_to(demo_voice)
        dst = out / rel.with_suffix(".wav")
        info = sf.info(dst)
        assert (info.format, info.subtype) == ("WAV", "PCM_16")
        assert info.samplerate == sf.info(src).samplerate and info.channels == sf.info(src).channels
        got, sr = sf.read(dst)
        want = expected_fap(src)
        assert got.shape == want.shape
        assert np.max(np.abs(got - want)) < 1e-4, rel
        loud = pyloudnorm.Meter(sr).integrated_loudness(got)
        assert loud == pytest.approx(-23.0, abs=0.05)
        assert dst.with_suffix(".lab").read_bytes() == src.with_suffix(".lab").read_bytes()
    assert not [p for p in out.rglob(".tmp-*")]


def test_targets_are_configurable(tmp_path, write_clip):
    src = write_clip(tmp_path / "in" / "s" / "x.flac", seconds=2.0, sr=48000, channels=2)
    out = tmp_path / "out"
    assert main(["normalize", str(tmp_path / "in"), str(out), "--loudness", "-18", "--peak", "-3"]) == 0
    got, _ = sf.read(out / "s" / "x.wav")
    assert np.max(np.abs(got - expected_fap(src, peak=-3.0, loudness=-18.0))) < 1e-4


def test_bad_clips_are_reported_not_written(tmp_path, write_clip, speech_like):
    src = tmp_path / "in" / "s"
    write_clip(src / "good.wav")
    write_clip(src / "rate8k.wav", sr=8000)
    write_clip(src / "rate96k.wav", sr=96000)
    write_clip(src / "six.wav", channels=6)
    write_clip(src / "short.wav", seconds=0.3)
    write_clip(src / "silent.wav", data=np.zeros((44100, 1), dtype=np.float32))
    nan = speech_like(1.0, 16000)
    nan[5] = np.nan
    write_clip(src / "nan.wav", data=nan, sr=16000, subtype="FLOAT")
    write_clip(src / "no_lab.wav", text=None)
    (src / "broken.mp3").write_bytes(b"ID3" + bytes(100))
    (src / "broken.lab").write_text("x")
    out = tmp_path / "out"
    js, md = tmp_path / "n.json", tmp_path / "n.md"
    assert main(["normalize", str(tmp_path / "in"), str(out), "--json", str(js), "--report", str(md)]) == 0
    assert outputs(out) == [f"s/{n}.{e}" for n in ("good", "rate8k", "rate96k") for e in ("lab", "wav")]
    data = json.loads(js.read_text())
    reasons = {c["path"]: c["reason"] for c in data["clips"]}
    assert reasons == {
        "s/good.wav": None,
        "s/rate8k.wav": None,
        "s/rate96k.wav": None,
        "s/six.wav": "too_many_channels",
        "s/short.wav": "too_short",
        "s/silent.wav": "silent",
        "s/nan.wav": "non_finite",
        "s/no_lab.wav": "no_lab",
        "s/broken.mp3": "unreadable",
    }
    for rate in (8000, 96000):
        got, sr = sf.read(out / "s" / f"rate{rate // 1000}k.wav")
        assert sr == rate
        assert np.max(np.abs(got - expected_fap(src / f"rate{rate // 1000}k.wav"))) < 1e-4
    assert "too_many_channels" in md.read_text()


def test_nothing_usable_exits_1(tmp_path, write_clip):
    write_clip(tmp_path / "in" / "s" / "x.wav", seconds=0.2)
    assert main(["normalize", str(tmp_path / "in"), str(tmp_path / "out")]) == 1
    assert outputs(tmp_path / "out") == []


def test_rerun_keeps_finished_files_and_overwrite_redoes_them(tmp_path, write_clip):
    src = tmp_path / "in"
    for i in range(3):
        write_clip(src / "s" / f"c{i}.wav", seed=i)
    out = tmp_path / "out"
    first = normalize_dir(src, out, num_workers=2, progress=False)
    assert first.counts() == {"written": 3}
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")}
    before = {p: p.read_bytes() for p in out.rglob("*.wav")}

    again = normalize_dir(src, out, progress=False)
    assert again.counts() == {"kept": 3}
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.wav")} == stamp

    (src / "s" / "c1.lab").write_text("a changed transcript")
    changed = normalize_dir(src, out, progress=False)
    assert changed.counts() == {"kept": 2, "written": 1}
    assert (out / "s" / "c1.lab").read_text() == "a changed transcript"

    redo = normalize_dir(src, out, overwrite=True, progress=False)
    assert redo.counts() == {"written": 3}
    assert {p: p.read_bytes() for p in out.rglob("*.wav")} == before  # same numbers, same bytes

    (src / "s" / "c2.lab").unlink()  # c2 is now skipped: its old output must not linger
    stale = normalize_dir(src, out, progress=False)
    assert stale.counts() == {"kept": 2, "skipped": 1}
    assert outputs(out) == ["s/c0.lab", "s/c0.wav", "s/c1.lab", "s/c1.wav"]


def test_clean_removes_old_outputs(tmp_path, write_clip):
    write_clip(tmp_path / "in" / "s" / "x.wav")
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    (out / "old" / "y.wav").write_bytes(b"old")
    assert main(["normalize", str(tmp_path / "in"), str(out), "--clean"]) == 0
    assert outputs(out) == ["s/x.lab", "s/x.wav"]


def test_workers_give_identical_bytes(demo_voice, tmp_path):
    normalize_dir(demo_voice, tmp_path / "one", num_workers=1, progress=False)
    normalize_dir(demo_voice, tmp_path / "two", num_workers=2, progress=False)
    for rel in outputs(tmp_path / "one"):
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes(), rel


@pytest.mark.parametrize(
    ("in_rel", "out_rel", "message"),
    [
        ("missing", "out", "input folder does not exist"),
        ("data", "data", "output folder is the input folder"),
        ("data", "data/normalized", "output folder is inside the input folder"),
        ("data/raw", "data", "output folder contains the input folder"),
        ("data", "afile/out", "not writable"),
        ("data", "afile", "exists and is not a folder"),
        ("empty", "out", "no audio files found"),
    ],
)
def test_bad_folders_are_clear_errors(tmp_path, write_clip, capsys, in_rel, out_rel, message):
    write_clip(tmp_path / "data" / "raw" / "s" / "x.wav")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("a file, not a folder")
    assert main(["normalize", str(tmp_path / in_rel), str(tmp_path / out_rel)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "data" / "normalized").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_is_a_clear_error(tmp_path, write_clip):
    write_clip(tmp_path / "in" / "s" / "x.wav")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            normalize_dir(tmp_path / "in", out, progress=False)
    finally:
        out.chmod(0o700)


def test_failed_write_leaves_no_partial_file(tmp_path, write_clip, monkeypatch):
    write_clip(tmp_path / "in" / "s" / "x.wav")
    real_write = sf.write

    def dying_write(path, data, *args, **kwargs):
        real_write(path, data[: len(data) // 2], *args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(norm.sf, "write", dying_write)
    with pytest.raises(UserError, match="x.wav: cannot write"):
        normalize_dir(tmp_path / "in", tmp_path / "out", progress=False)
    assert outputs(tmp_path / "out") == []  # neither x.wav nor a .tmp-* file


def test_header_overstating_the_length_is_still_normalized(tmp_path, write_clip, monkeypatch):
    # A header that claims more samples than the file holds (as MP3 estimates can): the clip is
    # not loaded whole up front, but the streaming check finds it short enough, so it is written.
    write_clip(tmp_path / "in" / "s" / "x.wav", seconds=1.0)
    real_info = sf.info

    def boasting_info(path, *args, **kwargs):
        info = real_info(path, *args, **kwargs)
        info.frames *= 10
        return info

    monkeypatch.setattr(norm.sf, "info", boasting_info)
    summary = normalize_dir(tmp_path / "in", tmp_path / "out", max_seconds=2.0, progress=False)
    assert [(o.path, o.status) for o in summary.outcomes] == [("s/x.wav", "written")]
    assert len(sf.read(tmp_path / "out" / "s" / "x.wav")[0]) == 44100


def test_normalize_does_not_import_torch(tmp_path):
    shutil.copytree(
        Path(__file__).parent.parent / "examples" / "demo-voice" / "anna", tmp_path / "in" / "anna"
    )
    code = (
        "import sys\n"
        "from fish_speech.cli import main\n"
        f"assert main(['normalize', {str(tmp_path / 'in')!r}, {str(tmp_path / 'out')!r}, '--num-workers', '1']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_settings_defaults_are_fap_defaults():
    assert Settings() == Settings(loudness=-23.0, peak=-1.0, block_size=0.4)
