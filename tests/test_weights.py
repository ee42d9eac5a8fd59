# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""Checks of a base-model directory before GPU time (`fish_speech.weights`), on tiny and full-size layouts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_storage_servers import tiny_checkpoint  # noqa: F401

from fish_speech.base_model.check import check_checkpoint_dir
from fish_speech.errors import UserError
from fish_speech.storage.manifest import build_manifest, write_manifest

SPEC = json.loads((Path(__file__).parent / "data" / "storage" / "s1_mini_state_dicts.json").read_text())


@pytest.fixture
def ckpt(tiny_checkpoint, tmp_path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, out)
    return out


def skeleton(path: Path, entries) -> None:
    """A state dict with the given keys/shapes/dtypes whose tensors share one element (a few KB on disk)."""
    torch.save({k: torch.zeros((), dtype=getattr(torch, dt)).expand(shape) for k, shape, dt in entries}, path)


def test_tiny_checkpoint_passes(ckpt):
    write_manifest(ckpt, build_manifest(ckpt))
    report = check_checkpoint_dir(ckpt)
    assert (report.model_tensors, report.codec, report.codec_tensors, report.manifest_files) == (
        39,
        "tiny",
        415,
        5,
    )
    assert "ok" in report.summary()


def test_missing_files_are_all_named(ckpt):
    (ckpt / "codec.pth").unlink()
    (ckpt / "special_tokens.json").unlink()
    with pytest.raises(UserError, match=r"missing special_tokens.json, codec.pth"):
        check_checkpoint_dir(ckpt)


def test_bad_config_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="config.json"):
        check_checkpoint_dir(ckpt)


def test_model_that_does_not_match_config(ckpt):
    config = json.loads((ckpt / "config.json").read_text())
    config["n_layer"] += 1
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"model.pth: does not match config.json: missing: layers\.2\."):
        check_checkpoint_dir(ckpt)


def test_truncated_and_incomplete_codec(ckpt):
    data = (ckpt / "codec.pth").read_bytes()
    (ckpt / "codec.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="codec.pth: cannot read"):
        check_checkpoint_dir(ckpt)
    (ckpt / "codec.pth").write_bytes(data)
    codec = torch.load(ckpt / "codec.pth", weights_only=True)
    codec.pop("quantizer.pre_module.layers.1.attention.wqkv.weight")
    torch.save(codec, ckpt / "codec.pth")
    with pytest.raises(
        UserError, match="codec.pth: does not match .*1 missing: quantizer.pre_module.layers.1.attention.wqkv"
    ):
        check_checkpoint_dir(ckpt)


def test_model_codebooks_must_match_the_codec(ckpt):
    from fish_speech.base_model.tiny import write_random_t2s

    write_random_t2s(ckpt)  # the golden tiny config: 4 codebooks of 64 codes
    with pytest.raises(UserError, match="num_codebooks 4, but codec.pth produces 10 codebooks"):
        check_checkpoint_dir(ckpt)


def test_manifest_mismatch(ckpt):
    write_manifest(ckpt, {**build_manifest(ckpt), "model.pth": "0" * 64})
    with pytest.raises(UserError, match="MANIFEST.sha256: model.pth: sha256 mismatch"):
        check_checkpoint_dir(ckpt)
    check_checkpoint_dir(ckpt, verify=False)


def test_full_size_layout_matches_the_spec_lists():
    from fish_speech.codec.checkpoint import expected_codec_state_dict_shapes
    from fish_speech.codec.model import CodecConfig
    from fish_speech.text2semantic.checkpoint import expected_t2s_state_dict_shapes
    from fish_speech.text2semantic.model import ModelConfig

    t2s = expected_t2s_state_dict_shapes(ModelConfig.s1_mini())
    assert [(k, list(s)) for k, (s, _) in t2s.items()] == [(k, s) for k, s, _ in SPEC["t2s"]]
    codec = expected_codec_state_dict_shapes(CodecConfig.s1_mini())
    assert [(k, list(s), str(d).removeprefix("torch.")) for k, (s, d) in codec.items()] == [
        tuple(e) for e in SPEC["codec"]
    ]


def test_full_size_checkpoint_is_checked_from_shapes_only(ckpt):
    """A full-size S1-mini layout (config, 287 + 541 tensors) is checked without reading tensor data."""
    (ckpt / "config.json").write_text(json.dumps(SPEC["t2s_config"], indent=4, sort_keys=True))
    skeleton(ckpt / "model.pth", SPEC["t2s"])
    skeleton(ckpt / "codec.pth", SPEC["codec"])
    report = check_checkpoint_dir(ckpt)
    assert (report.model, report.model_tensors, report.model_parameters) == ("S1-mini", 287, 860_169_216)
    assert (report.codec, report.codec_tensors) == ("s1-mini", 541)
    # a mis-shaped tensor in a full-size codec is found
    wrong = [
        e if e[0] != "quantizer.pre_module.layers.0.attention.wqkv.weight" else [e[0], [3, 3], e[2]]
        for e in SPEC["codec"]
    ]
    skeleton(ckpt / "codec.pth", wrong)
    with pytest.raises(UserError, match="codec.pth: does not match the s1-mini codec layout.*mis-shaped"):
        check_checkpoint_dir(ckpt)


def test_tiny_codec_next_to_a_full_size_model_is_refused(ckpt):
    (ckpt / "config.json").write_text(json.dumps(SPEC["t2s_config"], indent=4, sort_keys=True))
    skeleton(ckpt / "model.pth", SPEC["t2s"])
    with pytest.raises(UserError, match="codec.pth: does not match the s1-mini codec layout"):
        check_checkpoint_dir(ckpt)
