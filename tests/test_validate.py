"""Clip discovery and `fish-speech validate`: every clip ok or skipped with its reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from fish_speech.cli import main
from fish_speech.dataset.discover import find_audio_files, find_clips
from fish_speech.dataset.validate import MAX_LAB_BYTES, REASONS, validate_dir, write_report
from fish_speech.errors import UserError


def test_demo_voice_meets_its_promise(demo_voice):
    """2 speakers, 16 clips of 1-5 s, WAV 22.05/44.1 kHz, FLAC, MP3, one stereo file, <= 3 MB."""
    report = validate_dir(demo_voice, progress=False)
    assert [c.path for c in report.clips if not c.ok] == []
    assert len(report.clips) == 16
    assert set(report.speakers()) == {"anna", "ben"}
    assert all(1.0 <= c.duration <= 5.0 for c in report.clips)
    kinds = {(Path(c.path).suffix, c.sample_rate, c.channels) for c in report.clips}
    assert {(".wav", 22050, 1), (".wav", 44100, 1), (".wav", 44100, 2)} <= kinds
    assert {".flac", ".mp3"} <= {k[0] for k in kinds}
    assert all(c.text_chars and c.text_chars > 5 for c in report.clips)
    size = sum(p.stat().st_size for p in demo_voice.rglob("*") if p.is_file())
    assert size <= 3 * 1024 * 1024


def test_find_audio_files_filters_and_sorts(tmp_path, write_clip):
    write_clip(tmp_path / "b" / "2.WAV")
    write_clip(tmp_path / "a" / "1.flac")
    write_clip(tmp_path / "a" / "0.mp3")
    write_clip(tmp_path / "a" / ".tmp-0.wav.xyz.wav")  # an interrupted atomic write
    write_clip(tmp_path / ".cache" / "x.wav")  # hidden folder
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    (tmp_path / "a" / "0.npy").write_bytes(b"")
    files = find_audio_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/0.mp3", "a/1.flac", "b/2.WAV"]


def test_find_audio_files_leaves_out_escaping_and_broken_links(bad_data):
    rels = {f.relative_to(bad_data).as_posix() for f in find_audio_files(bad_data)}
    assert "spk/good.wav" in rels and "spk/link_in.wav" in rels
    assert not rels & {"spk/link_out.wav", "spk/dangling.wav", "spk/loop.wav"}
    assert not any(r.startswith(("linked_speaker/", "alias/")) for r in rels)


def test_max_seconds_zero_means_no_limit(tmp_path, write_clip):
    write_clip(tmp_path / "s" / "long.wav", seconds=3.0)
    assert validate_dir(tmp_path, max_seconds=1.0, progress=False).clips[0].reason == "too_long"
    assert validate_dir(tmp_path, max_seconds=0, progress=False).clips[0].ok
    assert validate_dir(tmp_path, max_seconds=None, progress=False).clips[0].ok


def test_empty_audio_file_says_so(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x.wav").write_bytes(b"")
    (tmp_path / "s" / "x.lab").write_text("hi")
    (r,) = validate_dir(tmp_path, progress=False).clips
    assert r.reason == "unreadable" and "empty file" in r.detail


def test_find_audio_files_missing_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_audio_files(tmp_path / "nope")


def test_find_clips_pairs_lab_and_speaker(tmp_path, write_clip):
    write_clip(tmp_path / "spk" / "x.wav")
    write_clip(tmp_path / "root.wav")
    write_clip(tmp_path / "group" / "deep" / "y.wav")
    clips = {c.rel: c for c in find_clips(tmp_path)}
    assert clips["spk/x.wav"].speaker == "spk" and clips["spk/x.wav"].lab == tmp_path / "spk" / "x.lab"
    assert clips["root.wav"].speaker == "."
    assert clips["group/deep/y.wav"].speaker == "group/deep"
    assert all(c.problem is None for c in clips.values())


@pytest.fixture
def bad_data(tmp_path, write_clip, speech_like):
    """A data folder with one clip per skip reason, plus unusual but usable clips."""
    root = tmp_path / "data"
    outside = tmp_path / "outside"
    s = root / "spk"
    write_clip(s / "good.wav")
    write_clip(s / "rate8k.wav", sr=8000)
    write_clip(s / "rate96k.flac", sr=96000)
    write_clip(s / "six_channels.wav", channels=6)
    write_clip(s / "no_lab.wav", text=None)
    write_clip(s / "empty_lab.wav", text="  \n")
    write_clip(s / "not_utf8.wav", text=None)
    (s / "not_utf8.lab").write_bytes("caf\u00e9".encode("latin-1"))
    write_clip(s / "huge_lab.wav", text="a" * (1024 * 1024))
    (s / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (s / "corrupt.lab").write_text("hi")
    write_clip(s / "zero.wav", data=np.zeros((0, 1), dtype=np.float32))
    write_clip(s / "short.wav", seconds=0.3)
    write_clip(s / "long.wav", seconds=3.0)
    write_clip(s / "silent.wav", data=np.full((44100, 1), 1e-4, dtype=np.float32))
    nan = speech_like(1.0, 16000)
    nan[100] = np.nan
    write_clip(s / "nan.wav", data=nan, sr=16000, subtype="FLOAT")
    write_clip(s / "odd_rate.wav", sr=44101)
    write_clip(s / "twin.wav")
    write_clip(s / "twin.flac")
    write_clip(outside / "elsewhere.wav")
    write_clip(outside / "spk2" / "z.wav")
    os.symlink(outside / "elsewhere.wav", s / "link_out.wav")
    (s / "link_out.lab").write_text("hello")
    os.symlink(outside / "spk2", root / "linked_speaker")
    os.symlink(s, root / "alias")
    os.symlink(s / "missing.wav", s / "dangling.wav")
    (s / "dangling.lab").write_text("hello")
    os.symlink(s / "loop.wav", s / "loop.wav")
    os.symlink(s / "good.wav", s / "link_in.wav")
    (s / "link_in.lab").write_text("hello")
    return root


EXPECTED = {
    "spk/good.wav": None,
    "spk/rate8k.wav": None,
    "spk/rate96k.flac": None,
    "spk/six_channels.wav": None,
    "spk/link_in.wav": None,
    "spk/no_lab.wav": "no_lab",
    "spk/empty_lab.wav": "empty_lab",
    "spk/not_utf8.wav": "lab_not_utf8",
    "spk/huge_lab.wav": "lab_too_large",
    "spk/corrupt.wav": "unreadable",
    "spk/zero.wav": "zero_length",
    "spk/short.wav": "too_short",
    "spk/long.wav": "too_long",
    "spk/silent.wav": "silent",
    "spk/nan.wav": "non_finite",
    "spk/odd_rate.wav": "sample_rate",
    "spk/twin.wav": "duplicate_stem",
    "spk/twin.flac": "duplicate_stem",
    "spk/link_out.wav": "symlink_outside",
    "spk/dangling.wav": "broken_symlink",
    "spk/loop.wav": "broken_symlink",
    "linked_speaker/": "symlink_outside",
    "alias/": "symlink_folder",
}


def test_every_bad_input_gets_its_reason(bad_data):
    report = validate_dir(bad_data, max_seconds=2.0, progress=False)
    got = {c.path: c.reason for c in report.clips}
    assert got == EXPECTED
    by = report.by_path()
    assert all(c.reason in REASONS for c in report.clips if not c.ok)
    assert all(c.detail for c in report.clips if not c.ok)
    assert str(MAX_LAB_BYTES) in by["spk/huge_lab.wav"].detail
    assert "NaN" in by["spk/nan.wav"].detail
    assert "twin.flac" in by["spk/twin.wav"].detail
    assert by["spk/rate8k.wav"].sample_rate == 8000 and by["spk/rate96k.flac"].sample_rate == 96000
    assert by["spk/six_channels.wav"].channels == 6 and "6 channels" in by["spk/six_channels.wav"].warnings[0]
    assert by["spk/long.wav"].duration == pytest.approx(3.0)
    assert report.reason_counts()["duplicate_stem"] == 2
    sp = report.speakers()["spk"]
    assert sp["ok"] == 5 and sp["clips"] == 21
    assert sp["minutes_ok"] == pytest.approx(5 / 60, abs=1e-3)


def test_reports_are_written_atomically_and_parse(bad_data, tmp_path):
    report = validate_dir(bad_data, max_seconds=2.0, num_workers=2, progress=False)
    md, js = tmp_path / "out" / "r.md", tmp_path / "out" / "r.json"
    write_report(report, js, md)
    data = json.loads(js.read_text())
    assert data["summary"]["ok"] == 5 and data["summary"]["clips"] == len(EXPECTED)
    assert {c["path"]: c["reason"] for c in data["clips"]} == EXPECTED
    assert data["speakers"]["spk"]["ok"] == 5
    text = md.read_text()
    for reason in set(EXPECTED.values()) - {None}:
        assert f"`{reason}`" in text
    assert sorted(p.name for p in md.parent.iterdir()) == ["r.json", "r.md"]  # no .tmp-* left


def test_workers_give_the_same_report(bad_data):
    one = validate_dir(bad_data, max_seconds=2.0, progress=False)
    two = validate_dir(bad_data, max_seconds=2.0, num_workers=2, progress=False)
    assert one.to_json() == two.to_json()


@pytest.mark.parametrize("workers", [1, 2])
def test_normalize_reports_what_validate_reports(bad_data, write_clip, speech_like, tmp_path, workers):
    # normalize decodes each clip once (float64, whole) instead of validate's float32 blocks:
    # its validation report must still be validate's, including 24/32-bit and clipped clips.
    from fish_speech.dataset.normalize import normalize_dir

    loud = np.clip(3 * speech_like(1.0, 44100), -1, 1)
    write_clip(bad_data / "extra" / "clipped.wav", data=loud)
    write_clip(bad_data / "extra" / "deep24.flac", subtype="PCM_24")
    write_clip(bad_data / "extra" / "deep32.wav", data=loud * 0.999, subtype="PCM_32")
    write_clip(bad_data / "extra" / "longer.wav", seconds=5.0)  # over the limit by its header alone
    expected = validate_dir(bad_data, max_seconds=2.0, progress=False)
    summary = normalize_dir(bad_data, tmp_path / "out", max_seconds=2.0, num_workers=workers, progress=False)
    assert summary.validation.to_json() == expected.to_json()
    assert {o.path for o in summary.outcomes if o.status == "written"} == {
        c.path for c in expected.clips if c.ok
    } - {"spk/six_channels.wav"}  # usable for the codec, but BS.1770 stops at 5 channels


def test_clipping_share_is_reported(tmp_path, write_clip, speech_like):
    data = speech_like(1.0, 16000)
    data[:800] = 1.0
    write_clip(tmp_path / "s" / "loud.wav", sr=16000, data=data)
    (r,) = validate_dir(tmp_path, progress=False).clips
    assert r.ok and r.clipping == pytest.approx(800 / 16000, abs=1e-6)
    assert r.warnings and "clipping" in r.warnings[0]


def test_cli_exit_status_and_messages(bad_data, tmp_path, capsys, write_clip):
    js = tmp_path / "r.json"
    assert main(["validate", str(bad_data), "--json", str(js), "--max-seconds", "2"]) == 0
    assert json.loads(js.read_text())["summary"]["ok"] == 5

    only_bad = tmp_path / "only_bad"
    write_clip(only_bad / "s" / "x.wav", text=None)
    assert main(["validate", str(only_bad), "--report", str(tmp_path / "b.md")]) == 1
    assert "no_lab" in (tmp_path / "b.md").read_text()

    capsys.readouterr()
    assert main(["validate", str(tmp_path / "missing")]) == 2
    assert "missing: data folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["validate", str(tmp_path / "empty")]) == 2
    assert "no audio files found" in capsys.readouterr().err
    assert main(["validate", str(bad_data), "--num-workers", "0"]) == 2
    assert "--num-workers must be at least 1" in capsys.readouterr().err
    (tmp_path / "file.wav").write_bytes(b"")
    assert main(["validate", str(tmp_path / "file.wav")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_validate_does_not_import_torch(demo_voice, tmp_path):
    """Data commands start fast: no torch on their path (checked in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from fish_speech.cli import main\n"
        f"assert main(['validate', {str(demo_voice)!r}, '--json', {str(tmp_path / 'r.json')!r}]) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_rerun_is_idempotent(demo_voice, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["validate", str(demo_voice), "--json", str(a)]) == 0
    assert main(["validate", str(demo_voice), "--json", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()


def test_unreadable_format_is_a_skip_not_a_crash(tmp_path, speech_like):
    s = tmp_path / "spk"
    s.mkdir()
    (s / "clip.m4a").write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    (s / "clip.lab").write_text("hello")
    sf.write(s / "ok.wav", speech_like(1.0, 22050), 22050)
    (s / "ok.lab").write_text("hello")
    report = validate_dir(tmp_path, progress=False)
    by = report.by_path()
    assert by["spk/clip.m4a"].reason == "unreadable" and by["spk/ok.wav"].ok
