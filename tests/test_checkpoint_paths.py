"""Checkpoint paths given to the commands: checked first, folders accepted, one clear line on a wrong file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fish_speech.cli import main

DATA = Path(__file__).resolve().parent / "data" / "codec"
CODEC = DATA / "codec.pth"


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from fish_speech.base_model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture
def coded_dir(tmp_path, write_clip) -> Path:
    """A data folder whose every clip already has its codes."""
    d = tmp_path / "data"
    write_clip(d / "spk" / "a.wav", seconds=0.5)
    np.save(d / "spk" / "a.npy", np.zeros((10, 11), dtype=np.int64))
    return d


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_extract_vq_checks_the_checkpoint_even_when_all_codes_exist(coded_dir, tiny_ckpt, capsys):
    rc = main(["extract-vq", str(coded_dir), "--checkpoint-path", str(tiny_ckpt / "model.pth")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert str(tiny_ckpt / "model.pth") in err and "not a codec checkpoint" in err
    rc = main(["extract-vq", str(coded_dir), "--checkpoint-path", str(coded_dir / "nosuch.pth")])
    assert rc == 2 and "codec checkpoint not found" in _one_line_error(capsys)


def test_extract_vq_takes_a_folder_with_codec_pth(tmp_path, write_clip, capsys):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    shutil.copy(CODEC, ckpt / "codec.pth")
    data = tmp_path / "data"
    write_clip(data / "spk" / "a.wav", seconds=0.5)
    rc = main(["extract-vq", str(data), "--checkpoint-path", str(ckpt), "--device", "cpu"])
    assert rc == 0
    assert np.load(data / "spk" / "a.npy").shape[0] == 10
    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["extract-vq", str(data), "--checkpoint-path", str(empty), "--overwrite"])
    assert rc == 2 and "a folder without codec.pth" in _one_line_error(capsys)


@pytest.mark.parametrize("content", [b"\x80\x02garbage" + bytes(range(256)) * 8, b"hello\n"])
def test_garbage_pth_is_one_line_naming_the_file(tmp_path, coded_dir, content, capsys):
    bad = tmp_path / "codec.pth"
    bad.write_bytes(content)
    rc = main(["extract-vq", str(coded_dir), "--checkpoint-path", str(bad)])
    assert rc == 2
    err = _one_line_error(capsys)
    assert str(bad) in err and "weights_only" not in err and "trusted source" not in err
    out = tmp_path / "out.wav"
    rc = main(
        ["decode-vq", str(coded_dir / "spk" / "a.npy"), "--checkpoint-path", str(bad), "--output", str(out)]
    )
    assert rc == 2 and str(bad) in _one_line_error(capsys) and not out.exists()


def test_garbage_model_pth_is_one_line(tmp_path, tiny_ckpt):
    from fish_speech.errors import UserError
    from fish_speech.text2semantic.checkpoint import read_state_dict

    bad = tmp_path / "model.pth"
    bad.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(UserError) as e:
        read_state_dict(bad)
    assert "\n" not in str(e.value) and "weights_only" not in str(e.value) and str(bad) in str(e.value)


def test_train_base_weight_file_asks_for_the_folder(tmp_path, tiny_ckpt, capsys):
    protos = tmp_path / "protos"
    protos.mkdir()
    rc = main(
        [
            "train",
            "--data",
            str(protos),
            "--base-weight",
            str(tiny_ckpt / "model.pth"),
            "--output",
            str(tmp_path / "r"),
        ]
    )
    assert rc == 2
    err = _one_line_error(capsys)
    assert "is a file" in err and "directory not found" not in err and str(tiny_ckpt) in err


def test_decode_vq_checks_the_codes_before_loading_the_codec(tmp_path, monkeypatch, capsys):
    import fish_speech.codec.decode as decode

    def no_load(*args, **kwargs):
        raise AssertionError("the codec was loaded before the codes file was checked")

    monkeypatch.setattr(decode, "load_codec", no_load)
    out = tmp_path / "out.wav"
    rc = main(
        ["decode-vq", str(tmp_path / "nosuch.npy"), "--checkpoint-path", str(CODEC), "--output", str(out)]
    )
    assert rc == 2
    assert "codes file not found" in _one_line_error(capsys)
    np.save(tmp_path / "bad.npy", np.zeros(5, dtype=np.int64))
    rc = main(["decode-vq", str(tmp_path / "bad.npy"), "--checkpoint-path", str(CODEC), "--output", str(out)])
    assert rc == 2 and "expected codes shaped" in _one_line_error(capsys)
