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


def make_normalized(root: Path, speakers: int = 2, clips: int = 2) -> Path:
    """A small normalized data folder (44.1 kHz mono WAV + .lab), as `normalize` writes it."""
    import soundfile as sf

    for s in range(speakers):
        for c in range(clips):
            path = root / f"SPK{s}" / f"clip{c}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(0.4 + 0.2 * c, 44100, seed=10 * s + c), 44100, subtype="PCM_16")
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
    assert len(reference) == 4

    work = tmp_path / "work"
    shutil.copytree(make_normalized(tmp_path / "src"), work)
    args = ["extract-vq", work, "--checkpoint-path", tiny_codec, "--batch-size", "2"]
    # During writes (deterministic points), then at arbitrary moments after some outputs exist.
    assert killed_at_write("mid-write", 1, *args) == -9
    assert not tree_bytes(work, [".npy"]), "a half-written .npy exists under its final name"
    assert killed_at_write("rename", 2, *args) == -9
    partial = tree_bytes(work, [".npy"])
    assert all(reference[k] == v for k, v in partial.items())
    killed_when(_npy_done(work, 3), *args)
    assert all(reference[k] == v for k, v in tree_bytes(work, [".npy"]).items())
    fish_speech(*args).check()  # resumes: finished clips are kept, the rest are encoded
    assert tree_bytes(work, [".npy"]) == reference


# ---------------------------------------------------------------------------------------------
# train and merge-lora

PROTOS = Path(__file__).resolve().parents[1] / "data" / "protos" / "expected" / "protos"  # tiny-config codes


def _train_args(base: Path, out: Path) -> list:
    return [
        "train",
        "--data",
        PROTOS,
        "--base-weight",
        base,
        "--output",
        out,
        "--max-steps",
        "4",
        "--save-every",
        "2",
        "--keep-last",
        "0",
        "--batch-size",
        "2",
        "--max-length",
        "128",
        "--num-workers",
        "0",
        "--val-fraction",
        "0",
        "--log-every",
        "1",
        "--seed",
        "7",
    ]


def _lora_tensors(ckpt: Path) -> dict:
    import torch

    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    state = data.get("state_dict", data)
    return {k: v.float() for k, v in state.items() if "lora" in k}


def _assert_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    import torch

    assert a.keys() == b.keys() and a
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"LoRA weights differ by up to {worst}"
    assert all(torch.isfinite(v).all() for v in a.values())


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny base model and an uninterrupted 4-step LoRA run (the reference)."""
    require_commands("train")
    from fish_speech.base_model.tiny import write_random_t2s

    root = tmp_path_factory.mktemp("train")
    base = write_random_t2s(root / "base")
    ref = root / "ref"
    fish_speech(*_train_args(base, ref)).check()
    return {"base": base, "ref": ref, "final": ref / "checkpoints" / "step_000000004.ckpt"}


@pytest.mark.slow
def test_train_killed_then_resumed(tmp_path, trained):
    out = tmp_path / "run"
    args = _train_args(trained["base"], out)
    step2 = out / "checkpoints" / "step_000000002.ckpt"
    # 1. kill -9 at an arbitrary moment after the first checkpoint is complete
    killed_when(step2.exists, *args)
    assert step2.exists()
    _assert_close(_lora_tensors(step2), _lora_tensors(trained["ref"] / "checkpoints" / step2.name))
    # 2. resume, and die half-way through writing the next checkpoint
    assert killed_at_write("mid-write", 1, *args, "--resume") == -9, "no checkpoint write was fsynced"
    assert not (out / "checkpoints" / "step_000000004.ckpt").exists()
    # 3. resume again: it must continue from the last *complete* checkpoint and end where the
    #    uninterrupted run ended
    fish_speech(*args, "--resume").check()
    final = out / "checkpoints" / "step_000000004.ckpt"
    _assert_close(_lora_tensors(final), _lora_tensors(trained["final"]))
    for ckpt in (out / "checkpoints").glob("step_*.ckpt"):  # every checkpoint under a final name is whole
        assert _lora_tensors(ckpt)


@pytest.mark.slow
def test_merge_lora_killed_then_rerun(tmp_path, trained):
    require_commands("merge-lora")
    import torch

    args = ["merge-lora", "--base-weight", trained["base"], "--lora-weight", trained["final"]]
    fish_speech(*args, "--output", tmp_path / "ref").check()
    out = tmp_path / "merged"
    for mode, at in [("mid-write", 1), ("rename", 1), ("rename", 2)]:
        code = killed_at_write(mode, at, *args, "--output", out)
        assert code == -9, f"merge-lora finished before its {mode} #{at}"
        model = out / "model.pth"
        if model.exists():  # whatever exists under a final name is whole
            torch.load(model, map_location="cpu", weights_only=True)
    fish_speech(*args, "--output", out).check()
    ref_files = tree_bytes(tmp_path / "ref", [".json", ".tiktoken", ".pth"])
    got_files = tree_bytes(out, [".json", ".tiktoken", ".pth"])
    assert ref_files.keys() == got_files.keys()
    for name in ref_files:
        if name.endswith(".pth"):
            a = torch.load(tmp_path / "ref" / name, map_location="cpu", weights_only=True)
            b = torch.load(out / name, map_location="cpu", weights_only=True)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        else:
            assert ref_files[name] == got_files[name], name
