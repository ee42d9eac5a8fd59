"""DualAR model and checkpoint loading, against upstream's golden vectors (tests/data/t2s, README there)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fish_speech.base_model.tiny import write_random_t2s
from fish_speech.errors import UserError
from fish_speech.text2semantic.checkpoint import (
    REQUIRED_FILES,
    expected_t2s_state_dict_shapes,
    load_config,
    load_model,
    read_state_dict,
)
from fish_speech.text2semantic.model import DualARTransformer, ModelConfig, rope_table

DATA = Path(__file__).resolve().parent / "data" / "t2s"
CKPT = DATA / "ckpt"
SPEC = DATA / "t2s_state_dict.json"  # copy of /work/shared/spec/t2s_state_dict.json
ATOL = 1e-4  # golden README tolerance for fp32 logits


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    load = lambda n: torch.from_numpy(np.load(DATA / "batch" / f"{n}.npy"))  # noqa: E731
    return load("inputs"), load("labels"), load("attention_masks")


@pytest.fixture(scope="module")
def model_fp32() -> DualARTransformer:
    return load_model(CKPT, dtype=torch.float32)


@pytest.fixture
def ckpt_copy(tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(CKPT, out)
    return out


# ---- config -----------------------------------------------------------------------------------------


def test_config_roundtrip_is_byte_identical() -> None:
    text = (CKPT / "config.json").read_text()
    config = ModelConfig.from_json(CKPT / "config.json")
    assert config.to_json_text() == text
    assert config == ModelConfig.tiny()
    assert len(config.to_dict()) == 31


def test_s1_mini_config_matches_spec() -> None:
    spec = json.loads(SPEC.read_text())
    config = ModelConfig.s1_mini()
    assert config.to_dict() == spec["config_json"]
    assert config.to_dict()["fast_attention_qk_norm"] is False


def test_config_defaults_resolve() -> None:
    c = ModelConfig(dim=256, n_head=4, head_dim=64)
    assert c.n_local_heads == 4 and c.intermediate_size == 768  # int(8*256/3)=682 -> 768
    assert c.fast_dim == 256 and c.fast_head_dim == 64 and c.fast_intermediate_size == 768
    c = ModelConfig(attention_qk_norm=True)
    assert c.fast_attention_qk_norm is True  # only None inherits
    c = ModelConfig(attention_qk_norm=True, fast_attention_qk_norm=False)
    assert c.fast_attention_qk_norm is False


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot read model config"),
        ('{"dim": 64, "foo": 1}', "unknown key"),
        ('{"model_type": "naive"}', "model_type"),
        ('{"dim": "64"}', "dim must be int"),
        ('{"dim": 100, "n_head": 3}', "multiple of n_head"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_bad_config_names_the_file(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(UserError, match=message) as e:
        load_config(tmp_path)
    assert str(tmp_path / "config.json") in str(e.value)


def test_missing_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="config.json"):
        load_config(tmp_path)


# ---- full-size structure (meta device, nothing allocated) -------------------------------------------


def test_s1_mini_state_dict_matches_spec() -> None:
    spec = json.loads(SPEC.read_text())
    shapes = expected_t2s_state_dict_shapes(ModelConfig.s1_mini())
    assert [k["key"] for k in spec["keys"]] == list(shapes)  # same keys, same order
    assert {k["key"]: tuple(k["shape"]) for k in spec["keys"]} == {k: s for k, (s, _) in shapes.items()}
    assert all(dt == torch.bfloat16 for _, dt in shapes.values())


def test_s1_mini_parameter_count() -> None:
    with torch.device("meta"):
        model = DualARTransformer(ModelConfig.s1_mini(), 151658, 155753)
    assert sum(p.numel() for p in model.parameters()) == 860_169_216
    assert len(model.state_dict()) == 287
    assert model.freqs_cis.shape == (8192, 64, 2)


# ---- numerics -------------------------------------------------------------------------------------


def test_rope_table_is_bf16_rounded() -> None:
    table = rope_table(16, 8, 10000)
    assert table.dtype == torch.bfloat16 and table.shape == (16, 4, 2)
    assert torch.equal(table[0, :, 0].float(), torch.ones(4)) and torch.equal(
        table[0, :, 1].float(), torch.zeros(4)
    )
    angle = torch.tensor(5.0) * (1.0 / 10000 ** (2 / 8))
    assert table[5, 1, 1] == torch.sin(angle).to(torch.bfloat16)


def test_training_forward_matches_upstream(model_fp32: DualARTransformer) -> None:
    inp, labels, mask = _batch()
    with torch.no_grad():
        token_logits, codebook_logits = model_fp32(inp, labels, mask)
    ref = np.load(DATA / "logits" / "base.stride7.npy")
    assert token_logits.shape == (2, 128, 4672)
    np.testing.assert_allclose(token_logits[:, :, ::7].numpy(), ref, atol=ATOL, rtol=0)
    ref_cb = np.load(DATA / "logits" / "base.codebook.npy")
    assert codebook_logits.shape == ref_cb.shape == (104, 4, 64)
    np.testing.assert_allclose(codebook_logits.numpy(), ref_cb, atol=ATOL, rtol=0)


def test_padding_mask_does_not_change_real_positions(model_fp32: DualARTransformer) -> None:
    inp, labels, mask = _batch()
    with torch.no_grad():
        with_mask = model_fp32(inp, labels, mask)
        without = model_fp32(inp, labels, None)
    real = ~mask
    torch.testing.assert_close(with_mask[0][real], without[0][real], atol=1e-5, rtol=0)
    torch.testing.assert_close(with_mask[1], without[1], atol=1e-5, rtol=0)


def test_loss_matches_upstream(model_fp32: DualARTransformer) -> None:
    inp, labels, mask = _batch()
    with torch.no_grad():
        token_logits, codebook_logits = model_fp32(inp, labels, mask)
    base = torch.nn.functional.cross_entropy(
        token_logits.flatten(0, 1), labels[:, 0].flatten(), ignore_index=-100
    )
    sel = model_fp32.is_semantic(labels[:, 0])
    targets = labels[:, 1:].transpose(1, 2)[sel]
    semantic = torch.nn.functional.cross_entropy(
        codebook_logits.flatten(0, 1), targets.flatten(), ignore_index=-100
    )
    logged = json.loads((DATA / "logits" / "base.json").read_text())["logged"]
    assert abs(base.item() - logged["val/base_loss"]) < 1e-4
    assert abs(semantic.item() - logged["val/semantic_loss"]) < 1e-4


def test_inference_forward_matches_upstream(model_fp32: DualARTransformer) -> None:
    inp, labels, _ = _batch()
    with torch.no_grad():
        logits, hidden = model_fp32.forward_generate(inp)
        train_logits, _ = model_fp32(inp, labels, None)
    np.testing.assert_allclose(
        logits[:, :, ::7].numpy(), np.load(DATA / "logits" / "base.generate.stride7.npy"), atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(
        hidden.numpy(), np.load(DATA / "logits" / "base.hidden.npy"), atol=ATOL, rtol=0
    )
    # Inference scales the embeddings at semantic inputs: identical before the first one, different after.
    first = [51, 62]
    for row, col in enumerate(first):
        assert (
            bool(model_fp32.is_semantic(inp[row, 0, col]))
            and not model_fp32.is_semantic(inp[row, 0, :col]).any()
        )
        assert torch.equal(logits[row, :col], train_logits[row, :col])
        assert not torch.allclose(logits[row, col:], train_logits[row, col:])


def test_bf16_training_step_runs_with_gradient_checkpointing() -> None:
    model = load_model(CKPT).train()
    assert model.embeddings.weight.dtype == torch.bfloat16 and model.config.use_gradient_checkpointing
    inp, labels, mask = _batch()
    token_logits, codebook_logits = model(inp, labels, mask)
    assert token_logits.dtype == codebook_logits.dtype == torch.bfloat16
    (token_logits.float().mean() + codebook_logits.float().mean()).backward()
    assert model.layers[0].attention.wqkv.weight.grad is not None
    assert model.fast_layers[-1].feed_forward.w2.weight.grad is not None


def test_no_semantic_target_gives_empty_codebook_logits(model_fp32: DualARTransformer) -> None:
    inp, labels, mask = _batch()
    labels = labels.clone()
    labels[:, 0] = -100
    with torch.no_grad():
        _, codebook_logits = model_fp32(inp, labels, mask)
    assert codebook_logits.shape == (0, 4, 64)


def test_too_long_sequence_is_rejected(model_fp32: DualARTransformer) -> None:
    inp = torch.zeros(1, 5, 1025, dtype=torch.long)
    with pytest.raises(ValueError, match="max_seq_len"):
        model_fp32.forward_generate(inp)


# ---- checkpoint loading ----------------------------------------------------------------------------


def test_load_model_keeps_file_dtype_and_buffers() -> None:
    model = load_model(CKPT)
    assert not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.freqs_cis.dtype == torch.bfloat16 and model.freqs_cis.device.type == "cpu"
    assert (model.semantic_begin_id, model.semantic_end_id) == (527, 4622)
    assert sum(p.numel() for p in model.parameters()) == 770_816


def test_required_files() -> None:
    assert set(REQUIRED_FILES) == {"model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json"}


@pytest.mark.parametrize("name", REQUIRED_FILES)
def test_missing_file_is_named(ckpt_copy: Path, name: str) -> None:
    (ckpt_copy / name).unlink()
    with pytest.raises(UserError, match=name):
        load_model(ckpt_copy)


def test_wrapped_prefixed_state_dict_with_audio_keys_loads(ckpt_copy: Path) -> None:
    state = torch.load(CKPT / "model.pth", weights_only=True)
    wrapped = {"state_dict": {f"model.{k}": v for k, v in state.items()}}
    wrapped["state_dict"]["model.audio_decoder.weight"] = torch.zeros(3)
    torch.save(wrapped, ckpt_copy / "model.pth")
    loaded = load_model(ckpt_copy).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_legacy_wq_wk_wv_is_fused(ckpt_copy: Path) -> None:
    state = torch.load(CKPT / "model.pth", weights_only=True)
    key = "layers.0.attention.wqkv.weight"
    wqkv = state.pop(key)
    (
        state["layers.0.attention.wq.weight"],
        state["layers.0.attention.wk.weight"],
        state["layers.0.attention.wv.weight"],
    ) = wqkv.split([128, 64, 64])
    torch.save(state, ckpt_copy / "model.pth")
    assert torch.equal(read_state_dict(ckpt_copy / "model.pth")[key], wqkv)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("norm.weight"), "missing: norm.weight"),
        (lambda s: s.__setitem__("extra.weight", torch.zeros(2)), "unexpected: extra.weight"),
        (lambda s: s.__setitem__("norm.weight", torch.zeros(65)), "wrong shape: norm.weight"),
    ],
)
def test_mismatched_state_dict_names_the_file(ckpt_copy: Path, edit, message: str) -> None:
    state = torch.load(CKPT / "model.pth", weights_only=True)
    edit(state)
    torch.save(state, ckpt_copy / "model.pth")
    with pytest.raises(UserError, match=message) as e:
        load_model(ckpt_copy)
    assert str(ckpt_copy / "model.pth") in str(e.value)


def test_config_that_does_not_match_weights(ckpt_copy: Path) -> None:
    config = ModelConfig.tiny()
    config.n_layer = 3
    (ckpt_copy / "config.json").write_text(config.to_json_text())
    with pytest.raises(UserError, match="missing: layers.2"):
        load_model(ckpt_copy)


def test_corrupt_model_file(ckpt_copy: Path) -> None:
    (ckpt_copy / "model.pth").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot load model weights"):
        load_model(ckpt_copy)


def test_mixed_dtype_file_loads_as_fp32(ckpt_copy: Path) -> None:
    state = torch.load(CKPT / "model.pth", weights_only=True)
    state["output.weight"] = state["output.weight"].float()
    torch.save(state, ckpt_copy / "model.pth")
    model = load_model(ckpt_copy)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_write_random_t2s_roundtrip(tmp_path: Path) -> None:
    out = write_random_t2s(tmp_path / "a", seed=1)
    assert sorted(p.name for p in out.iterdir()) == sorted(REQUIRED_FILES)
    state = torch.load(out / "model.pth", weights_only=True)
    assert {v.dtype for v in state.values()} == {torch.bfloat16}
    assert list(state) == list(expected_t2s_state_dict_shapes(ModelConfig.tiny()))
    model = load_model(out)
    assert model.config == ModelConfig.tiny()
    # deterministic per seed, different across seeds; norms start at 1
    again = torch.load(write_random_t2s(tmp_path / "b", seed=1) / "model.pth", weights_only=True)
    other = torch.load(write_random_t2s(tmp_path / "c", seed=2) / "model.pth", weights_only=True)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert not torch.equal(state["embeddings.weight"], other["embeddings.weight"])
    assert torch.equal(state["norm.weight"], torch.ones(64, dtype=torch.bfloat16))
    std = state["layers.0.feed_forward.w1.weight"].float().std().item()
    assert abs(std - 0.125) < 0.01


def test_reference_outputs_tool(tmp_path: Path) -> None:
    from fish_speech.cli import main

    batch = DATA / "batch"
    out = tmp_path / "base.npy"
    args = [str(CKPT), str(batch / "inputs.npy"), str(out), "--labels", str(batch / "labels.npy")]
    assert (
        main(
            [
                "parity-logits",
                *args,
                "--attention-mask",
                str(batch / "attention_masks.npy"),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(
        np.load(out)[:, :, ::7], np.load(DATA / "logits" / "base.stride7.npy"), atol=ATOL
    )
    for suffix in ("codebook", "hidden"):
        ref = np.load(DATA / "logits" / f"base.{suffix}.npy")
        np.testing.assert_allclose(np.load(tmp_path / f"base.{suffix}.npy"), ref, atol=ATOL, rtol=0)
    ref = np.load(DATA / "logits" / "base.generate.stride7.npy")
    np.testing.assert_allclose(np.load(tmp_path / "base.generate.npy")[:, :, ::7], ref, atol=ATOL, rtol=0)


def test_alternative_config_branches() -> None:
    """Tied head, biases, fast projection (fast_dim != dim) and a fast q/k norm build and run."""
    config = ModelConfig(
        vocab_size=4672, n_layer=1, n_head=4, n_local_heads=1, head_dim=16, dim=64, intermediate_size=64,
        max_seq_len=64, tie_word_embeddings=True, attention_qkv_bias=True, attention_o_bias=True,
        codebook_size=64, num_codebooks=3, n_fast_layer=1, fast_dim=32, fast_n_head=2, fast_head_dim=16,
        fast_attention_qk_norm=True,
    )  # fmt: skip
    assert config.fast_attention_qkv_bias and config.fast_n_local_heads == 1
    shapes = expected_t2s_state_dict_shapes(config)
    assert "output.weight" not in shapes
    assert shapes["fast_project_in.weight"][0] == (32, 64) and shapes["fast_project_in.bias"][0] == (32,)
    assert shapes["layers.0.attention.wqkv.bias"][0] == ((4 + 2) * 16,)
    assert "fast_layers.0.attention.q_norm.weight" in shapes
    torch.manual_seed(0)
    model = DualARTransformer(config, 527, 4622)
    assert list(model.state_dict()) == list(shapes)
    inp = torch.zeros(2, 4, 10, dtype=torch.long)
    inp[:, 0, :4] = torch.randint(0, 512, (2, 4))
    inp[:, 0, 4:] = 527 + torch.randint(0, 64, (2, 6))
    inp[:, 1:, 4:] = torch.randint(0, 64, (2, 3, 6))
    labels = torch.full_like(inp, -100)
    labels[:, :, :-1] = inp[:, :, 1:]
    token_logits, codebook_logits = model(inp, labels)
    assert token_logits.shape == (2, 10, 4672) and codebook_logits.shape == (2 * 6, 3, 64)
    logits, hidden = model.forward_generate(inp)
    assert hidden.shape == (2, 10, 32)
    # no scaling configured: inference and training logits agree everywhere
    torch.testing.assert_close(logits, token_logits)
