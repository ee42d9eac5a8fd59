"""`merge-lora`: upstream's golden LoRA merges to upstream's merged logits; merged == LoRA model; layout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fish_speech.cli import main as cli_main
from fish_speech.errors import UserError
from fish_speech.text2semantic import lora as L
from fish_speech.text2semantic.checkpoint import load_model
from fish_speech.text2semantic.merge import merge_lora
from fish_speech.text2semantic.training.checkpoints import checkpoint_name, select_checkpoint

DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"
LORA = DATA / "lora"


def _batch():
    return tuple(
        torch.from_numpy(np.load(DATA / "batch" / f"{n}.npy"))
        for n in ("inputs", "labels", "attention_masks")
    )


@pytest.fixture
def base(tmp_path) -> Path:
    """The tiny golden checkpoint plus a stand-in codec.pth (any bytes: merge only carries it over)."""
    out = tmp_path / "base"
    shutil.copytree(CKPT, out)
    (out / "codec.pth").write_bytes(b"codec weights")
    return out


def _logits(model, inputs, labels, mask):
    with torch.no_grad():
        token, codebook = model.eval()(inputs, labels, mask)
        generate, _ = model.forward_generate(inputs)
    return token, codebook, generate


def test_golden_lora_merges_to_golden_logits(base, tmp_path):
    out = merge_lora(base, LORA / "lora.ckpt", tmp_path / "merged", dtype="float32")
    token, codebook, generate = _logits(load_model(out), *_batch())
    np.testing.assert_allclose(token[:, :, ::7], np.load(LORA / "logits-lora.stride7.npy"), atol=1e-4)
    np.testing.assert_allclose(codebook, np.load(LORA / "logits-lora.codebook.npy"), atol=1e-4)
    np.testing.assert_allclose(
        generate[:, :, ::7], np.load(LORA / "logits-lora.generate.stride7.npy"), atol=1e-4
    )


def test_default_dtype_is_the_base_dtype_and_weights_are_w_plus_scaled_ba(base, tmp_path):
    out = merge_lora(base, LORA / "lora.ckpt", tmp_path / "merged")
    merged = torch.load(out / "model.pth", weights_only=True)
    base_sd = torch.load(base / "model.pth", weights_only=True)
    lora = torch.load(LORA / "lora.ckpt", weights_only=True)["state_dict"]
    assert list(merged) == list(base_sd)
    assert {v.dtype for v in merged.values()} == {torch.bfloat16}  # one dtype, the base's
    a, b = (
        lora["model.layers.1.feed_forward.w2.lora_A"].float(),
        lora["model.layers.1.feed_forward.w2.lora_B"].float(),
    )
    want = (base_sd["layers.1.feed_forward.w2.weight"].float() + 2.0 * b @ a).to(torch.bfloat16)
    assert torch.equal(merged["layers.1.feed_forward.w2.weight"], want)
    a, b = lora["model.codebook_embeddings.lora_A"].float(), lora["model.codebook_embeddings.lora_B"].float()
    want = (base_sd["codebook_embeddings.weight"].float() + 2.0 * (b @ a).T).to(torch.bfloat16)
    assert torch.equal(merged["codebook_embeddings.weight"], want)
    assert torch.equal(merged["norm.weight"], base_sd["norm.weight"])  # not adapted: unchanged


def test_merged_model_equals_lora_model(base, tmp_path):
    # a trained-looking adapter set: random, non-zero A and B everywhere
    spec = L.resolve_lora_spec()
    model = load_model(base, dtype=torch.float32)
    L.setup_lora(model, spec)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, p in L.trainable_parameters(model):
            p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    ckpt = tmp_path / "adapters.ckpt"
    torch.save({"state_dict": L.lora_state_dict(model)}, ckpt)
    batch = _batch()
    want = _logits(model, *batch)
    out = merge_lora(base, ckpt, tmp_path / "merged", dtype="float32")
    got = _logits(load_model(out), *batch)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-4)


def test_output_layout_and_idempotent_rerun(base, tmp_path):
    out = merge_lora(base, LORA / "lora.ckpt", tmp_path / "merged")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        [
            "model.pth",
            "config.json",
            "tokenizer.tiktoken",
            "special_tokens.json",
            "codec.pth",
            "merge_info.json",
        ]
    )
    for name in ("config.json", "tokenizer.tiktoken", "special_tokens.json", "codec.pth"):
        assert (out / name).read_bytes() == (base / name).read_bytes(), name
    info = json.loads((out / "merge_info.json").read_text())
    assert info["adapted_weights"] == 25 and info["output_dtype"] == "bfloat16"
    stamp = (out / "model.pth").stat().st_mtime_ns
    merge_lora(base, LORA / "lora.ckpt", out)
    assert (out / "model.pth").stat().st_mtime_ns == stamp  # nothing rewritten
    merge_lora(base, LORA / "lora.ckpt", out, dtype="float32")  # other inputs: rewritten
    assert {v.dtype for v in torch.load(out / "model.pth", weights_only=True).values()} == {torch.float32}


def _fake_run(tmp_path: Path, val_losses: dict[int, float | None]) -> Path:
    lora = torch.load(LORA / "lora.ckpt", weights_only=True)["state_dict"]
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for step, val in val_losses.items():
        meta = {"val_loss": val, "lora_config": L.resolve_lora_spec().to_dict()}
        torch.save({"state_dict": lora, "fish_speech": meta}, run / "checkpoints" / checkpoint_name(step))
    (run / "checkpoints" / ".tmp-step_000000400.ckpt.xyz").write_bytes(b"partial")
    return run


def test_selectors(tmp_path):
    run = _fake_run(tmp_path, {100: 5.0, 200: 4.2, 300: 4.6})
    assert select_checkpoint("best", run).name == "step_000000200.ckpt"
    assert select_checkpoint("last", run).name == "step_000000300.ckpt"  # the .tmp- file is ignored
    assert select_checkpoint("earliest", run / "checkpoints").name == "step_000000100.ckpt"
    assert select_checkpoint("step_300", run).name == "step_000000300.ckpt"
    with pytest.raises(UserError, match="no checkpoint for step 250"):
        select_checkpoint("step_250", run)
    no_val = _fake_run(tmp_path / "b", {100: None})
    with pytest.raises(UserError, match="no checkpoint has a validation loss"):
        select_checkpoint("best", no_val)


def test_cli_merge_with_selector(base, tmp_path, capsys):
    run = _fake_run(tmp_path, {10: 3.0, 20: 2.0})
    out = tmp_path / "merged"
    argv = ["merge-lora", "--base-weight", str(base), "--lora-weight", "best", "--output", str(out)]
    assert cli_main([*argv, "--train-output", str(run)]) == 0
    info = json.loads((out / "merge_info.json").read_text())
    assert info["lora_weight"].endswith("step_000000020.ckpt")
    assert cli_main(argv) == 2  # a selector needs --train-output
    assert "--train-output" in capsys.readouterr().err


def test_bad_inputs(base, tmp_path):
    lora = LORA / "lora.ckpt"
    broken = tmp_path / "broken"
    shutil.copytree(base, broken)
    (broken / "tokenizer.tiktoken").unlink()
    with pytest.raises(UserError, match=r"broken/tokenizer\.tiktoken: missing"):
        merge_lora(broken, lora, tmp_path / "o1")

    wrong = tmp_path / "wrong"
    shutil.copytree(base, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["dim"] = 128
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"wrong/model\.pth: does not match config\.json"):
        merge_lora(wrong, lora, tmp_path / "o2")

    with pytest.raises(
        UserError, match=r"lora\.ckpt: LoRA rank \[8\] does not match --lora-config r_4_alpha_8"
    ):
        merge_lora(base, lora, tmp_path / "o3", lora_config="r_4_alpha_8")

    # our checkpoints record their config: another alpha is refused, not silently mis-scaled
    ours = tmp_path / "ours.ckpt"
    meta = {"lora_config": L.resolve_lora_spec("r_8_alpha_32").to_dict()}
    torch.save({"state_dict": torch.load(lora, weights_only=True)["state_dict"], "fish_speech": meta}, ours)
    with pytest.raises(UserError, match="ours.ckpt: trained with LoRA r=8 alpha=32"):
        merge_lora(base, ours, tmp_path / "o4")

    with pytest.raises(UserError, match="must not be the base"):
        merge_lora(base, lora, base)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()
