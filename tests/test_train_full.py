"""`fish-speech train --mode full`: every weight trained, loss goes down, exact resume, the output
folder loads strictly, merge-lora refuses a full checkpoint in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from fish_speech.base_model.tiny import write_random_t2s
from fish_speech.cli import main as cli_main
from fish_speech.errors import UserError
from fish_speech.text2semantic.checkpoint import load_model, read_state_dict
from fish_speech.text2semantic.merge import merge_lora
from fish_speech.text2semantic.model import ModelConfig
from fish_speech.text2semantic.train import train

DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"  # tiny golden model: 4 codebooks of 64
PROTOS = DATA / "protos" / "00000000.protos"
DEMO_PROTOS = DATA / "lora" / "demo-voice.protos"
FAST = dict(batch_size=2, max_length=160, num_workers=0, log_every=1, learning_rate=1e-3, mode="full")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full")
    train(PROTOS, CKPT, out, max_steps=4, save_every=2, **FAST)
    return out


def test_full_checkpoint_and_model_folder(straight):
    base = read_state_dict(CKPT / "model.pth")
    ckpt = torch.load(straight / "checkpoints" / "step_000000004.ckpt", map_location="cpu", weights_only=True)
    state = ckpt["state_dict"]
    # upstream's layout without LoRA: every model tensor under `model.<name>`, plus the optimizer state
    assert sorted(k.removeprefix("model.") for k in state) == sorted(base)
    assert ckpt["fish_speech"]["mode"] == "full" and ckpt["optimizer_states"]
    assert all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())  # fp32 master
    changed = [k for k in base if not torch.equal(state["model." + k], base[k].float())]
    assert len(changed) == len(base)  # every weight of the slow and fast transformers was trained

    summary = json.loads((straight / "summary.json").read_text())
    assert summary["mode"] == "full" and summary["lora"] is None
    assert summary["trainable_parameters"] == sum(v.numel() for v in base.values())
    model_dir = Path(summary["model_dir"])
    assert model_dir == straight / "model"
    assert summary["model_from_checkpoint"] == summary["best_checkpoint"]
    for name in ("model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json"):
        assert (model_dir / name).is_file(), name
    # the released layout: loads with the strict loader, in the base file's dtype, the chosen step's weights
    model = load_model(model_dir)
    chosen = _state(straight / "checkpoints" / summary["model_from_checkpoint"])
    for k, v in model.state_dict().items():
        if k in base:
            assert v.dtype == base[k].dtype
            torch.testing.assert_close(v, chosen["model." + k].to(v.dtype), rtol=0, atol=0)


def test_full_resume_is_exact(straight, tmp_path):
    out = tmp_path / "run"
    train(PROTOS, CKPT, out, max_steps=2, save_every=2, **FAST)
    summary = train(PROTOS, CKPT, out, max_steps=4, save_every=2, resume=True, **FAST)
    assert summary["resumed_from"] == "step_000000002.ckpt"
    want, got = (
        _state(straight / "checkpoints" / "step_000000004.ckpt"),
        _state(out / "checkpoints" / "step_000000004.ckpt"),
    )
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
    # a LoRA run cannot resume a full one, and the other way round
    with pytest.raises(UserError, match="--mode full training, this run asks for --mode lora"):
        train(PROTOS, CKPT, out, max_steps=6, resume=True, **{**FAST, "mode": "lora"})


def test_merge_lora_given_a_full_checkpoint_says_so(straight, tmp_path, capsys):
    ckpt = straight / "checkpoints" / "step_000000004.ckpt"
    with pytest.raises(UserError, match="a full fine-tuning checkpoint .* nothing to merge"):
        merge_lora(CKPT, ckpt, tmp_path / "merged")
    argv = [
        "merge-lora",
        "--base-weight",
        str(CKPT),
        "--lora-weight",
        str(ckpt),
        "--output",
        str(tmp_path / "m"),
    ]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing to merge" in err[0] and "model/" in err[0]


def test_freeze_embeddings(tmp_path):
    out = tmp_path / "frozen"
    summary = train(PROTOS, CKPT, out, max_steps=2, save_every=2, freeze_embeddings=True, **FAST)
    base = read_state_dict(CKPT / "model.pth")
    state = _state(out / "checkpoints" / "step_000000002.ckpt")
    tables = ("embeddings.weight", "codebook_embeddings.weight", "fast_embeddings.weight")
    for k in tables:
        assert torch.equal(state["model." + k], base[k].float()), k
    assert not torch.equal(state["model.output.weight"], base["output.weight"].float())
    assert summary["trainable_parameters"] == sum(v.numel() for k, v in base.items() if k not in tables)
    with pytest.raises(UserError, match="--freeze-embeddings applies to --mode full"):
        train(PROTOS, CKPT, tmp_path / "x", freeze_embeddings=True, **{**FAST, "mode": "lora"})


@pytest.mark.slow  # ~15 s on an idle 2-core machine
def test_full_loss_goes_down_on_demo_voice(tmp_path):
    config = dataclasses.replace(ModelConfig.tiny(), num_codebooks=10, codebook_size=4096)
    base = write_random_t2s(tmp_path / "base", config=config, seed=0)
    opts = {**FAST, "max_length": 256, "learning_rate": 1e-3, "warmup_steps": 2}
    train(DEMO_PROTOS, base, tmp_path / "out", max_steps=20, save_every=20, val_every=5, **opts)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    losses = [r["loss"] for r in metrics["train"]]
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.5, (first, last)
    val = [r["loss"] for r in metrics["val"]]
    assert val[-1] < val[0], val


def test_cli_mode_full(tmp_path, capsys):
    out = tmp_path / "cli"
    argv = [
        "train",
        "--data",
        str(PROTOS),
        "--base-weight",
        str(CKPT),
        "--output",
        str(out),
        "--mode",
        "full",
    ]
    argv += ["--max-steps", "1", "--batch-size", "2", "--max-length", "160", "--num-workers", "0"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert f"fine-tuned model (from step_000000001.ckpt): {out / 'model'}" in printed
    assert cli_main([*argv, "--overwrite", "--freeze-embeddings"]) == 0
    assert cli_main(["train", *argv[1:-8], "--mode", "lora", "--freeze-embeddings", "--max-steps", "1"]) == 2
