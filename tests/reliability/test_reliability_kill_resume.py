"""Kill and resume (issue #7 item 4): `kill -9` a step at several points, during a write included,
rerun it, and compare the final outputs with an uninterrupted run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from corpus import tone
from harness import fish_speech, killed_at_write, killed_when, require_commands, temp_files, tree_bytes

from fish_speech.dataset.protos import read_protos
from fish_speech.fileio import is_temp_file


def make_normalized(root: Path, speakers: int = 2, clips: int = 3) -> Path:
    """A small normalized data folder (44.1 kHz mono WAV + .lab), as `normalize` writes it."""
    import soundfile as sf

    for s in range(speakers):
        for c in range(clips):
            path = root / f"SPK{s}" / f"clip{c}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(0.6 + 0.25 * c, 44100, seed=10 * s + c), 44100, subtype="PCM_16")
            path.with_suffix(".lab").write_text(f"Speaker {s} says sentence number {c}.", encoding="utf-8")
    return root


def make_codes(root: Path, groups: int = 6, clips: int = 4) -> Path:
    """A data folder with codes already extracted (for build-dataset alone)."""
    rng = np.random.default_rng(0)
    for g in range(groups):
        for c in range(clips):
            folder = root / f"SPK{g}"
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"c{c}.npy", rng.integers(0, 1024, size=(10, 300 + 40 * c), dtype=np.int64))
            (folder / f"c{c}.lab").write_text(f"group {g} clip {c}")
    return root


# ---------------------------------------------------------------------------------------------
# build-dataset


@pytest.mark.parametrize(("mode", "at"), [("mid-write", 1), ("mid-write", 3), ("rename", 2)])
def test_build_dataset_killed_then_rerun(tmp_path, mode, at):
    data = make_codes(tmp_path / "data")
    args = ["build-dataset", "--input", data, "--num-workers", "2", "--shard-size", "0.01"]
    fish_speech(*args, "--output", tmp_path / "ref").check()
    reference = tree_bytes(tmp_path / "ref", [".protos"])
    assert len(reference) >= 3

    out = tmp_path / "out"
    fish_speech(*args[:-1], "1", "--output", out).check()  # an earlier output with larger shards
    earlier = tree_bytes(out, [".protos"])
    assert killed_at_write(mode, at, *args, "--output", out) == -9
    if mode == "mid-write":  # killed before the renames: the earlier output is untouched
        assert tree_bytes(out, [".protos"]) == earlier
    else:  # killed between renames: every shard under a final name is still whole
        assert sum(1 for _ in read_protos(out)) >= 1
    fish_speech(*args, "--output", out).check()
    assert tree_bytes(out, [".protos"]) == reference
    assert not temp_files(out)


# ---------------------------------------------------------------------------------------------
# extract-vq


def _npy_done(root: Path, count: int):
    return lambda: sum(1 for p in root.rglob("*.npy") if not is_temp_file(p)) >= count


@pytest.mark.slow
def test_extract_vq_killed_then_rerun(tmp_path, tiny_codec):
    require_commands("extract-vq")
    ref = make_normalized(tmp_path / "ref")
    fish_speech("extract-vq", ref, "--checkpoint-path", tiny_codec, "--batch-size", "2").check()
    reference = tree_bytes(ref, [".npy"])
    assert len(reference) == 6

    work = tmp_path / "work"
    shutil.copytree(make_normalized(tmp_path / "src"), work)
    args = ["extract-vq", work, "--checkpoint-path", tiny_codec, "--batch-size", "2"]
    # During writes (deterministic points), then at arbitrary moments after some outputs exist.
    assert killed_at_write("mid-write", 1, *args) == -9
    assert not tree_bytes(work, [".npy"]), "a half-written .npy exists under its final name"
    assert killed_at_write("rename", 3, *args) == -9
    partial = tree_bytes(work, [".npy"])
    assert all(reference[k] == v for k, v in partial.items())
    killed_when(_npy_done(work, 4), *args)
    assert all(reference[k] == v for k, v in tree_bytes(work, [".npy"]).items())
    fish_speech(*args).check()
    assert tree_bytes(work, [".npy"]) == reference
    fish_speech(*args).check()  # a rerun of a finished step changes nothing
    assert tree_bytes(work, [".npy"]) == reference
