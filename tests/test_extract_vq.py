"""`fish-speech extract-vq`: upstream's codes on the golden clips, skips, reruns, shards, long clips."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fish_speech.base_model.tiny import write_random_codec
from fish_speech.cli import main
from fish_speech.codec import extract_vq as xvq
from fish_speech.codec.checkpoint import load_codec
from fish_speech.codec.model import CodecConfig

DATA = Path(__file__).resolve().parent / "data" / "codec"
CODEC = DATA / "codec.pth"


@pytest.fixture(scope="module")
def codec():
    return load_codec(CODEC, encode_only=True)


@pytest.fixture
def golden_dir(tmp_path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(DATA / "audio", d)
    for p in d.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d


def _npys(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.npy"))}


def test_cli_matches_upstream_codes_and_skips_bad_files(golden_dir, tmp_path):
    (golden_dir / "empty.wav").write_bytes(b"")
    sf.write(golden_dir / "zero.wav", np.zeros((0, 1), dtype=np.float32), 44100)
    (golden_dir / "corrupt.flac").write_bytes(b"fLaC" + b"\x00" * 100)
    nan = np.full((4096, 1), np.nan, dtype=np.float32)
    sf.write(golden_dir / "nan.wav", nan, 44100, subtype="FLOAT")
    report = tmp_path / "report.json"
    rc = main(
        [
            "extract-vq",
            str(golden_dir),
            "--checkpoint-path",
            str(CODEC),
            "--config-name",
            "modded_dac_vq",
            "--batch-size",
            "4",
            "--num-workers",
            "1",
            "--device",
            "cpu",
            "--report",
            str(report),
        ]
    )
    assert rc == 0
    expected = _npys(DATA / "expected")
    assert len(expected) == 8
    assert _npys(golden_dir) == expected  # byte-identical to upstream's files
    summary = json.loads(report.read_text())
    assert summary["files"] == 12 and summary["written"] == 8
    reasons = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"empty.wav", "zero.wav", "corrupt.flac", "nan.wav"}
    assert "0 samples" in reasons["zero.wav"] and "non-finite" in reasons["nan.wav"]
    assert "cannot read" in reasons["corrupt.flac"]
    assert summary["frames"] == sum(np.load(DATA / "expected" / k).shape[1] for k in expected)
    clips = json.loads((DATA / "clips.json").read_text())
    assert summary["audio_seconds"] == pytest.approx(sum(c["samples_44k"] for c in clips) / 44100)
    assert not list(golden_dir.rglob(".tmp-*"))


def test_batched_equals_one_at_a_time(tmp_path, codec, write_clip):
    # Different lengths (and rates) in one batch: zero padding must not change any code.
    for i, (seconds, sr) in enumerate(
        [(0.3, 44100), (2.2, 44100), (1.1, 22050), (3.0, 48000), (0.05, 16000)]
    ):
        write_clip(tmp_path / "a" / f"clip{i}.wav", seconds=seconds, sr=sr, seed=i)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    one = xvq.extract_vq(
        tmp_path / "a", CODEC, batch_size=1, num_workers=0, device="cpu", model=codec, progress=False
    )
    many = xvq.extract_vq(
        tmp_path / "b",
        CODEC,
        batch_size=8,
        num_workers=1,
        device="cpu",
        model=codec,
        progress=False,
        max_batch_samples=10**9,  # all five in one batch (the CPU default keeps clips over 2 s apart)
    )
    assert one["written"] == many["written"] == 5
    assert _npys(tmp_path / "a") == _npys(tmp_path / "b")
    codes = np.load(tmp_path / "a" / "clip3.npy")
    assert codes.dtype == np.int64 and codes.shape == (10, math.ceil(3.0 * 44100 / 2048))


def test_rerun_skips_existing_overwrite_and_atomic_writes(tmp_path, codec, write_clip, monkeypatch):
    for i in range(4):
        write_clip(tmp_path / "spk" / f"c{i}.wav", seconds=0.2 + 0.1 * i, seed=i)
    calls = {"n": 0}
    real_save = xvq.save_codes

    def dying_save(path, codes):
        calls["n"] += 1
        if calls["n"] == 3:
            # simulate a kill in the middle of writing: the temporary file exists, then we die
            real_np_save = np.save
            monkeypatch.setattr(
                np,
                "save",
                lambda f, a: (real_np_save(f, a[:, :1]), (_ for _ in ()).throw(KeyboardInterrupt()))[0],
            )
        return real_save(path, codes)

    monkeypatch.setattr(xvq, "save_codes", dying_save)
    with pytest.raises(KeyboardInterrupt):
        xvq.extract_vq(
            tmp_path, CODEC, batch_size=1, num_workers=0, device="cpu", model=codec, progress=False
        )
    monkeypatch.undo()
    written = sorted(p.name for p in tmp_path.rglob("*.npy"))
    assert len(written) == 2  # no partial third file, no temporary left behind
    assert not list(tmp_path.rglob(".tmp-*"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.npy")}
    s = xvq.extract_vq(tmp_path, CODEC, num_workers=0, device="cpu", model=codec, progress=False)
    assert (s["written"], s["already_done"]) == (2, 2)
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished files untouched
    s = xvq.extract_vq(tmp_path, CODEC, num_workers=0, device="cpu", model=codec, progress=False)
    assert (s["written"], s["already_done"]) == (0, 4)
    s = xvq.extract_vq(
        tmp_path, CODEC, num_workers=0, device="cpu", model=codec, overwrite=True, progress=False
    )
    assert (s["written"], s["already_done"]) == (4, 0)


def test_shards_partition_the_sorted_file_list(tmp_path, codec, write_clip):
    names = [f"s{i}/clip{j}.wav" for i in range(2) for j in range(3)]
    for k, name in enumerate(names):
        write_clip(tmp_path / name, seconds=0.1, seed=k)
    seen = []
    for index in range(3):
        before = set(_npys(tmp_path))
        s = xvq.extract_vq(
            tmp_path,
            CODEC,
            num_workers=0,
            device="cpu",
            model=codec,
            shard_index=index,
            num_shards=3,
            progress=False,
        )
        new = set(_npys(tmp_path)) - before
        assert s["files"] == s["written"] == len(new) == 2
        seen += sorted(new)
    assert sorted(seen) == sorted(n.replace(".wav", ".npy") for n in names)
    assert seen[:2] == ["s0/clip0.npy", "s1/clip0.npy"]  # files[0::3] of the sorted list
    with pytest.raises(Exception, match="shard-index"):
        xvq.extract_vq(tmp_path, CODEC, shard_index=3, num_shards=3, model=codec)


def test_clip_longer_than_upstream_limit(tmp_path, codec, write_clip):
    # 14 s > the tiny codec's 11.89 s RoPE table (upstream raises an index error): encoded in windows.
    assert codec.config.max_input_samples / 44100 < 12
    path = write_clip(tmp_path / "long.wav", seconds=14.0, sr=44100, seed=7)
    s = xvq.extract_vq(tmp_path, CODEC, num_workers=0, device="cpu", model=codec, progress=False)
    assert s["written"] == 1 and not s["skipped"]
    codes = np.load(path.with_suffix(".npy"))
    n = sf.info(path).frames
    assert codes.shape == (10, math.ceil(n / 2048))
    wav = torch.from_numpy(sf.read(path, dtype="float32")[0])
    with torch.inference_mode():
        one_pass = codec._encode_padded(wav.view(1, 1, -1))[0]  # single pass, RoPE table extended
    assert np.array_equal(codes, one_pass.numpy())


def test_same_stem_clash_and_bad_arguments(tmp_path, codec, write_clip):
    write_clip(tmp_path / "a.wav", seconds=0.1)
    write_clip(tmp_path / "a.flac", seconds=0.1)
    s = xvq.extract_vq(tmp_path, CODEC, num_workers=0, device="cpu", model=codec, progress=False)
    assert s["written"] == 1 and "same output a.npy" in s["skipped"][0]["reason"]
    assert main(["extract-vq", str(tmp_path / "missing"), "--checkpoint-path", str(CODEC)]) == 2
    assert (
        main(["extract-vq", str(tmp_path), "--checkpoint-path", str(tmp_path / "nope.pth"), "--overwrite"])
        == 2
    )


def test_demo_voice_with_random_codec(demo_voice, tmp_path):
    data = tmp_path / "demo"
    shutil.copytree(demo_voice, data, ignore=shutil.ignore_patterns("*.npy"))
    codec_path = write_random_codec(tmp_path / "codec.pth", CodecConfig.tiny(), seed=1, calibrate_seconds=1.0)
    s = xvq.extract_vq(data, codec_path, num_workers=1, device="cpu", progress=False)
    audio = [p for p in data.rglob("*") if p.suffix.lower() in {".wav", ".flac", ".mp3"}]
    assert s["written"] == len(audio) > 0 and not s["skipped"]
    for p in audio:
        codes = np.load(p.with_suffix(".npy"))
        assert codes.dtype == np.int64 and codes.shape[0] == 10


def test_length_bucketed_batches():
    lengths = [5, 100, 7, 50, 51, 3, 1000, 49, 6]
    clips = [xvq.EncodeJob(Path(f"c{i}.wav"), Path(f"c{i}.npy"), n, n / 44100) for i, n in enumerate(lengths)]
    batches = xvq.make_batches(clips, batch_size=3, max_batch_samples=160, max_single=500)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert batches[0] == [6]  # over max_single: alone, and first (longest first)
    for b in batches:
        sizes = [lengths[i] for i in b]
        assert sizes == sorted(sizes, reverse=True) and len(b) <= 3
        assert len(b) == 1 or len(b) * sizes[0] <= 160
    assert [lengths[i] for i in batches[1]] == [100]  # 2 x 100 > 160
    assert [lengths[i] for i in batches[2]] == [51, 50, 49]


def test_output_dir_writes_codes_at_the_clips_relative_paths(tmp_path, codec, write_clip):
    """`--output-dir CODES`: the same codes as beside each clip, at CODES/<rel>/<stem>.npy; DATA only read."""
    data = tmp_path / "data"
    for k, name in enumerate(["a/one.wav", "a/b/two.wav", "three.wav"]):
        write_clip(data / name, seconds=0.2, seed=k)
    beside = tmp_path / "beside"
    shutil.copytree(data, beside)
    xvq.extract_vq(beside, CODEC, num_workers=0, device="cpu", model=codec, progress=False)
    files_before = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    out = tmp_path / "codes"
    rc = main(
        [
            "extract-vq",
            str(data),
            "--checkpoint-path",
            str(CODEC),
            "--output-dir",
            str(out),
            "--device",
            "cpu",
        ]
        + ["--num-workers", "0", "--shard-index", "1", "--num-shards", "2"]
    )
    assert rc == 0
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == files_before  # nothing written
    # shard 1 of 2 of the sorted files (a/b/two.wav, a/one.wav, three.wav) is a/one.wav
    assert _npys(out) == {"a/one.npy": (beside / "a" / "one.npy").read_bytes()}
    s = xvq.extract_vq(data, CODEC, output_dir=out, num_workers=0, device="cpu", model=codec, progress=False)
    assert (s["written"], s["already_done"], s["output_dir"]) == (2, 1, str(out))
    assert _npys(out) == _npys(beside)
