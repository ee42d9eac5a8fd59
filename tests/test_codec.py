"""Codec model and checkpoint tests against upstream's golden outputs (tiny codec) and the real layout (meta)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fish_speech.base_model.tiny import write_random_codec
from fish_speech.codec.checkpoint import (
    expected_codec_state_dict_shapes,
    infer_codec_config,
    load_codec,
)
from fish_speech.codec.model import Codec, CodecConfig, rope_table
from fish_speech.errors import UserError

DATA = Path(__file__).resolve().parent / "data" / "codec"
CODEC = DATA / "codec.pth"
SPEC = DATA / "s1_mini_state_dict.json"  # copy of spec/codec_state_dict.json (the real 541-key layout)
TOL = 1e-5  # golden README: upstream's own variation across threads/batch sizes stays below this


@pytest.fixture(scope="module")
def codec() -> Codec:
    return load_codec(CODEC)


def _intermediates(name: str) -> dict[str, np.ndarray]:
    folder = DATA / "intermediates" / name
    manifest = json.loads((folder / "manifest.json").read_text())
    return {
        t["name"]: np.load(folder / t["file"])
        for t in manifest["tensors"]
        if (folder / t.get("file", "-")).is_file()
    }


def _capture(model: Codec, audio: np.ndarray) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Run encode at batch 1 and record every module's output (batch item 0)."""
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o)))
    q = model.quantizer
    stages = [*q.semantic_quantizer.quantizers, *q.quantizer.quantizers]
    for s, stage in enumerate(stages):
        hooks.append(
            stage.register_forward_hook(
                lambda m, i, o, s=s: seen.update(
                    {f"vq{s}.input": i[0], f"vq{s}.codes": o[0], f"vq{s}.out": o[1]}
                )
            )
        )
        hooks.append(
            stage.in_proj.register_forward_hook(lambda m, i, o, s=s: seen.__setitem__(f"vq{s}.z_e", o))
        )
    try:
        codes, _ = model.encode(torch.from_numpy(audio)[None, None])
    finally:
        for h in hooks:
            h.remove()
    seen["encoder_out"] = seen["encoder.block.6"]
    return {k: v[0] for k, v in seen.items() if isinstance(v, torch.Tensor)}, codes[0]


# ----------------------------------------------------------------------------- layout


def test_full_size_layout_matches_spec_on_meta_device():
    expected = expected_codec_state_dict_shapes(CodecConfig.s1_mini())
    spec = json.loads(SPEC.read_text())
    ref = {k["key"]: (tuple(k["shape"]), k["dtype"]) for k in spec["keys"]}
    assert list(expected) == list(ref)  # same keys, same (file) order
    assert {k: (s, str(d).removeprefix("torch.")) for k, (s, d) in expected.items()} == ref
    assert len(expected) == 541
    params = sum(math.prod(s) for s, d in expected.values() if d == torch.float32)
    assert params == spec["parameter_count"] == 391_430_530


def test_tiny_layout_matches_golden_file():
    expected = expected_codec_state_dict_shapes(CodecConfig.tiny())
    ref = [
        (k["key"], tuple(k["shape"]), k["dtype"]) for k in json.loads((DATA / "state_dict.json").read_text())
    ]
    assert [(k, s, str(d).removeprefix("torch.")) for k, (s, d) in expected.items()] == ref
    assert len(expected) == 415


def test_config_from_json_and_inference():
    assert CodecConfig.from_json(DATA / "config.json") == CodecConfig.tiny()
    state = torch.load(CODEC, map_location="cpu", weights_only=True)
    assert infer_codec_config(state).name == "tiny"
    with torch.device("meta"):
        meta_state = Codec(CodecConfig.s1_mini()).state_dict()
    assert infer_codec_config(meta_state).name == "s1-mini"
    assert CodecConfig.s1_mini().max_input_samples == 8_388_608  # 190.2 s
    assert CodecConfig.tiny().max_input_samples == 524_288
    assert CodecConfig.s1_mini().frame_length == 2048


def test_rope_formula_matches_stored_tables():
    state = torch.load(CODEC, map_location="cpu", weights_only=True)
    for key in ("encoder.block.4.block.5.freqs_cis", "quantizer.pre_module.freqs_cis"):
        stored = state[key]
        assert stored.dtype == torch.bfloat16
        assert torch.equal(rope_table(stored.shape[0], 64, 10000.0), stored)


# ----------------------------------------------------------------------------- numerics vs upstream


def test_encoder_sub_blocks_match_upstream(codec):
    ref = _intermediates("exact6144")
    ours, codes = _capture(codec, ref["audio_44k"])
    compared = 0
    for name, value in ref.items():
        if name.startswith("encoder.block"):
            np.testing.assert_allclose(ours[name].numpy(), value, atol=TOL, rtol=0, err_msg=name)
            compared += 1
    assert compared >= 20
    assert np.array_equal(codes.numpy(), ref["codes"])


def test_quantizer_stages_match_upstream(codec):
    ref = _intermediates("hello22k")
    ours, codes = _capture(codec, ref["audio_44k"])
    for name, value in ref.items():
        if name in ("audio_44k", "codes"):
            continue
        got = ours[name].numpy()
        if value.dtype == np.int64:
            assert np.array_equal(got, value), name
        else:
            np.testing.assert_allclose(got, value, atol=TOL, rtol=0, err_msg=name)
    assert codes.dtype == torch.int64 and codes.shape == (10, 73)
    assert np.array_equal(codes.numpy(), ref["codes"])


def test_codes_match_upstream_for_44k_clips(codec):
    # Clips that need no resampling: the model alone must give upstream's codes.
    for rel in ("mono44k/long_speech.wav", "mono44k/short1323.wav", "mono44k/hello.flac"):
        wav, sr = sf.read(DATA / "audio" / rel, dtype="float32")
        assert sr == 44100
        codes, frames = codec.encode(torch.from_numpy(wav)[None, None], torch.tensor([len(wav)]))
        expected = np.load(DATA / "expected" / Path(rel).with_suffix(".npy"))
        assert int(frames[0]) == expected.shape[1] == math.ceil(len(wav) / 2048)
        assert np.array_equal(codes[0].numpy(), expected), rel


def test_batched_equals_one_at_a_time(codec):
    ref = _intermediates("hello22k")["audio_44k"]
    clips = [ref[:50_000], ref, ref[7_000:30_001], ref[:2048]]
    single = [
        codec.encode(torch.from_numpy(c)[None, None])[0][0, :, : codec.frames_for(len(c))] for c in clips
    ]
    longest = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(torch.from_numpy(c), (0, longest - len(c))) for c in clips])
    codes, frames = codec.encode(batch[:, None], torch.tensor([len(c) for c in clips]))
    for i, c in enumerate(clips):
        assert int(frames[i]) == math.ceil(len(c) / 2048)
        assert torch.equal(codes[i, :, : frames[i]], single[i])


# ----------------------------------------------------------------------------- long inputs


def test_long_input_windows_equal_one_extended_pass(tmp_path):
    # A micro codec (short attention windows, small RoPE tables) keeps this fast; the logic is the
    # same at full size. Windowed encoding (left context = receptive field) must give the codes of
    # a single pass over the whole input with the RoPE table extended by its formula.
    config = dataclasses.replace(
        CodecConfig.tiny(),
        encoder_dim=4,
        encoder_transformer_layers=(0, 0, 0, 1),
        encoder_block_size=128,
        encoder_window=32,
        quantizer_layers=1,
        quantizer_block_size=32,
        quantizer_window=8,
        decoder_dim=16,
        name="micro",
    )
    assert config.max_input_samples == 32 * 2048  # 1.5 s
    context = config.receptive_field_samples
    assert 40_000 < context < 80_000  # about 1.3 s
    model = load_codec(
        write_random_codec(tmp_path / "micro.pth", config, calibrate_seconds=1.0), config=config
    )
    speech = _intermediates("hello22k")["audio_44k"]
    n = 3 * 44100 + 777
    x = torch.from_numpy(np.resize(speech, n))
    with torch.inference_mode():
        one_pass = model._encode_padded(x.view(1, 1, -1))[0]
    assert one_pass.shape == (10, math.ceil(n / 2048))
    assert len(torch.unique(one_pass[0])) > 10
    windowed = model.encode_long(x, max_window_samples=48 * 2048)  # a second window with 1.3 s of context
    assert torch.equal(windowed, one_pass)
    codes, frames = model.encode(x.view(1, 1, -1))  # default path: inputs over the 1.5 s limit
    assert torch.equal(codes[0], one_pass) and int(frames[0]) == one_pass.shape[1]
    # too little context would change codes: the test can tell
    short = model.encode_long(x, max_window_samples=48 * 2048, context_samples=2048)
    assert not torch.equal(short, one_pass)


def test_receptive_field():
    # S1-mini: about 71.5 s of audio influences a code frame (encoder 4 x 511, pre-module 8 x 127 frames).
    assert 3_100_000 < CodecConfig.s1_mini().receptive_field_samples < 3_200_000


# ----------------------------------------------------------------------------- checkpoint files


def test_container_variants_load_identically(tmp_path, codec):
    state = torch.load(CODEC, map_location="cpu", weights_only=True)
    variants = {
        "wrapped.pth": {"state_dict": state},
        "generator.pth": {
            **{f"generator.{k}": v for k, v in state.items()},
            "discriminator.conv.weight": torch.zeros(3),
        },
    }
    audio = torch.from_numpy(_intermediates("exact6144")["audio_44k"])[None, None]
    expected, _ = codec.encode(audio)
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        model = load_codec(tmp_path / name)
        assert torch.equal(model.encode(audio)[0], expected), name


def test_bad_checkpoints_raise_one_clear_error(tmp_path):
    state = torch.load(CODEC, map_location="cpu", weights_only=True)
    broken = dict(state)
    del broken["encoder.block.6.conv.bias"]
    del broken["quantizer.pre_module.causal_mask"]
    broken["extra.weight"] = torch.zeros(1)
    broken["quantizer.quantizer.quantizers.0.codebook.weight"] = torch.zeros(1024, 4)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(UserError) as e:
        load_codec(tmp_path / "broken.pth", config=CodecConfig.tiny())
    msg = str(e.value)
    assert str(tmp_path / "broken.pth") in msg
    for part in (
        "2 missing",
        "encoder.block.6.conv.bias",
        "quantizer.pre_module.causal_mask",
        "1 unexpected: extra.weight",
        "1 mis-shaped",
        "(1024, 4)",
    ):
        assert part in msg
    # a truncated file and a non-checkpoint fail with the file named
    (tmp_path / "trunc.pth").write_bytes(CODEC.read_bytes()[:10_000])
    (tmp_path / "text.pth").write_text("hello")
    for name in ("trunc.pth", "text.pth", "missing.pth"):
        with pytest.raises(UserError, match=name):
            load_codec(tmp_path / name)
    # the tiny file against the real config: every key mis-shaped or missing
    with pytest.raises(UserError, match="s1-mini codec layout"):
        load_codec(CODEC, config=CodecConfig.s1_mini())


def test_write_random_codec_real_layout(tmp_path):
    path = write_random_codec(tmp_path / "codec.pth", CodecConfig.tiny(), seed=3, calibrate_seconds=1.0)
    state = torch.load(path, map_location="cpu", weights_only=True)
    expected = expected_codec_state_dict_shapes(CodecConfig.tiny())
    assert list(state) == list(expected)
    for k, (shape, dtype) in expected.items():
        assert tuple(state[k].shape) == shape and state[k].dtype == dtype, k
    assert torch.equal(
        state["quantizer.pre_module.causal_mask"], torch.ones(256, 256, dtype=torch.bool).tril()
    )
    assert torch.equal(state["encoder.block.4.block.5.freqs_cis"], rope_table(1024, 64, 10000.0))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # deterministic, and different seeds give different weights
    again = torch.load(
        write_random_codec(tmp_path / "again.pth", CodecConfig.tiny(), seed=3, calibrate_seconds=1.0),
        weights_only=True,
    )
    other = torch.load(
        write_random_codec(tmp_path / "other.pth", CodecConfig.tiny(), seed=4, calibrate_seconds=1.0),
        weights_only=True,
    )
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(state["encoder.block.0.conv.bias"], other["encoder.block.0.conv.bias"])
    # loads, and its codes are not degenerate (calibrated VQ projections)
    model = load_codec(path)
    codes, _ = model.encode(torch.from_numpy(_intermediates("hello22k")["audio_44k"])[None, None])
    assert all(len(torch.unique(row)) > 10 for row in codes[0])


# ----------------------------------------------------------------------------- decode


def test_decode_round_trip_shapes(codec, tmp_path):
    audio = torch.from_numpy(_intermediates("hello22k")["audio_44k"][:20_000])[None, None]
    codes, _ = codec.encode(audio)
    wav = codec.decode(codes)
    assert wav.shape == (1, 1, 10 * 2048)
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0 and wav.std() > 0
    assert torch.equal(codec.decode(codes[0]), wav)  # (10, F) accepted too  # (10, F) accepted too
    # out-of-range codes are clamped like upstream, not an index error
    assert codec.decode(torch.full((1, 10, 3), 5000)).shape == (1, 1, 3 * 2048)
    with pytest.raises(RuntimeError, match="encode_only"):
        load_codec(CODEC, encode_only=True).decode(codes)


def test_decode_vq_command(tmp_path, codec):
    from fish_speech.cli import main

    codes, _ = codec.encode(torch.from_numpy(_intermediates("exact6144")["audio_44k"])[None, None])
    np.save(tmp_path / "clip.npy", codes[0].numpy())
    out = tmp_path / "preview.wav"
    rc = main(
        [
            "decode-vq",
            str(tmp_path / "clip.npy"),
            "--checkpoint-path",
            str(CODEC),
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    info = sf.info(out)
    assert info.samplerate == 44100 and info.frames == 3 * 2048
    np.save(tmp_path / "bad.npy", np.zeros((4, 3), dtype=np.int64))
    rc = main(
        [
            "decode-vq",
            str(tmp_path / "bad.npy"),
            "--checkpoint-path",
            str(CODEC),
            "--output",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 2
