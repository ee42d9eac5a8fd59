"""LoRA set-up (peft), upstream checkpoint naming, and the training loss, against upstream's golden vectors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fish_speech.errors import UserError
from fish_speech.text2semantic import lora as L
from fish_speech.text2semantic.checkpoint import load_model
from fish_speech.text2semantic.loss import dual_ar_loss
from fish_speech.text2semantic.model import DualARTransformer, ModelConfig

DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"
LORA = DATA / "lora"


def _batch():
    return tuple(
        torch.from_numpy(np.load(DATA / "batch" / f"{n}.npy"))
        for n in ("inputs", "labels", "attention_masks")
    )


def _meta_model(config: ModelConfig) -> DualARTransformer:
    with torch.device("meta"):
        return DualARTransformer(config, 151658, 155753)


def test_full_size_trainable_parameters_and_names_match_upstream():
    model = _meta_model(ModelConfig.s1_mini())
    L.setup_lora(model, L.resolve_lora_spec("r_8_alpha_16"))
    assert L.count_trainable(model) == 8_071_168
    spec = json.loads((DATA / "t2s_state_dict.json").read_text())["lora_r_8_alpha_16"]
    ours = {k: tuple(v.shape) for k, v in L.lora_state_dict(model).items()}
    assert list(ours) == [k["key"] for k in spec["keys"]]  # same names, same (module) order
    assert ours == {k["key"]: tuple(k["shape"]) for k in spec["keys"]}
    # only adapters train: norms, fast_project_in and base weights are frozen
    assert all(".lora_" in n for n, _ in L.trainable_parameters(model))


def test_fast_only_config_counts():
    model = _meta_model(ModelConfig.s1_mini())
    L.setup_lora(model, L.resolve_lora_spec("r_32_alpha_16_fast"))
    assert L.count_trainable(model) == 2_555_904
    assert len(L.lora_state_dict(model)) == 2 * 22


def test_base_weights_bit_identical_after_setup():
    model = load_model(CKPT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    L.setup_lora(model, L.resolve_lora_spec())
    after = L.base_state_dict(model)
    assert list(after) == list(before)
    for k, v in before.items():
        assert after[k].dtype == v.dtype and torch.equal(after[k], v), k
    assert L.count_trainable(model) == 109_056
    # adapters start as a zero delta: same logits as the base model
    assert all(p.dtype == torch.float32 for _, p in L.trainable_parameters(model))


def test_golden_lora_checkpoint_gives_upstream_logits_and_loss():
    model = load_model(CKPT, dtype=torch.float32)
    spec = L.resolve_lora_spec("r_8_alpha_16")
    L.setup_lora(model, spec)
    state = L.read_lora_checkpoint(LORA / "lora.ckpt")
    L.load_lora_state_dict(model, state, spec, "lora.ckpt")
    inputs, labels, mask = _batch()
    with torch.no_grad():
        token_logits, codebook_logits = model.eval()(inputs, labels, mask)
        generate_logits, _ = model.forward_generate(inputs)
    np.testing.assert_allclose(token_logits[:, :, ::7], np.load(LORA / "logits-lora.stride7.npy"), atol=1e-4)
    np.testing.assert_allclose(codebook_logits, np.load(LORA / "logits-lora.codebook.npy"), atol=1e-4)
    np.testing.assert_allclose(
        generate_logits[:, :, ::7], np.load(LORA / "logits-lora.generate.stride7.npy"), atol=1e-4
    )
    out = dual_ar_loss(token_logits, codebook_logits, labels, model.semantic_begin_id, model.semantic_end_id)
    golden = json.loads((LORA / "logits-lora.json").read_text())["logged"]
    assert out.loss.item() == pytest.approx(golden["val/loss"], abs=1e-4)
    assert out.base_loss.item() == pytest.approx(golden["val/base_loss"], abs=1e-4)
    assert out.semantic_loss.item() == pytest.approx(golden["val/semantic_loss"], abs=1e-4)
    assert (out.top5_hits.item(), out.top5_count.item()) == (29, 412)
    # written back under upstream's names, the tensors round-trip exactly (bf16 -> fp32 -> bf16)
    back = L.lora_state_dict(model)
    assert list(back) == list(state)
    assert all(torch.equal(back[k].to(torch.bfloat16), state[k]) for k in state)


def test_loss_matches_upstream_on_base_model():
    model = load_model(CKPT, dtype=torch.float32)
    inputs, labels, mask = _batch()
    with torch.no_grad():
        out = dual_ar_loss(
            *model(inputs, labels, mask), labels, model.semantic_begin_id, model.semantic_end_id
        )
    golden = json.loads((DATA / "logits" / "base.json").read_text())
    assert out.loss.item() == pytest.approx(golden["loss"], abs=1e-4)
    assert out.semantic_loss.item() == pytest.approx(golden["logged"]["val/semantic_loss"], abs=1e-4)
    assert out.top5_accuracy.item() == pytest.approx(golden["logged"]["val/top_5_accuracy"], abs=1e-6)


def test_loss_without_semantic_targets_is_finite():
    token_logits = torch.randn(1, 5, 10)
    labels = torch.full((1, 3, 5), -100)
    labels[0, 0, 2] = 3  # one text target, no semantic one (semantic ids 8..9)
    out = dual_ar_loss(token_logits, torch.zeros(0, 2, 4), labels, 8, 9)
    assert torch.isfinite(out.loss) and out.semantic_loss.item() == 0.0 and out.top5_count.item() == 0


def test_wrong_rank_is_a_clear_error(tmp_path):
    model = load_model(CKPT)
    spec16 = L.resolve_lora_spec("r_16_alpha_32")
    assert (spec16.r, spec16.alpha) == (16, 32)
    L.setup_lora(model, spec16)
    with pytest.raises(
        UserError, match=r"lora\.ckpt: LoRA rank \[8\] does not match --lora-config r_16_alpha_32"
    ):
        L.load_lora_state_dict(
            model, L.read_lora_checkpoint(LORA / "lora.ckpt"), spec16, str(LORA / "lora.ckpt")
        )


def test_checkpoint_reading_errors(tmp_path):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="bad.ckpt: cannot read"):
        L.read_lora_checkpoint(bad)
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {"model.norm.weight": torch.ones(2)}}, empty)
    with pytest.raises(UserError, match="empty.ckpt: no LoRA tensors"):
        L.read_lora_checkpoint(empty)
    with pytest.raises(UserError, match="missing.ckpt: LoRA checkpoint not found"):
        L.read_lora_checkpoint(tmp_path / "missing.ckpt")


def test_peft_style_names_are_accepted():
    names = {
        "base_model.model.layers.0.attention.wqkv.lora_A.default.weight": "model.layers.0.attention.wqkv.lora_A",
        "model.embeddings.lora_embedding_B.default": "model.embeddings.lora_B",
        "model.output.lora_B": "model.output.lora_B",
        "model.norm.weight": None,
    }
    out = L.normalize_lora_keys({k: torch.zeros(1) for k in names})
    assert sorted(out) == sorted(v for v in names.values() if v)


def test_unknown_config_name():
    with pytest.raises(UserError, match="unknown --lora-config"):
        L.resolve_lora_spec("huge")
    assert L.resolve_lora_spec("r_8_alpha_16", r=4).scaling == 4.0
