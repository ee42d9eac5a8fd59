"""`fish-speech train`: outputs, loss goes down, exact resume (also after SIGKILL), bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fish_speech.base_model.tiny import write_random_t2s
from fish_speech.cli import main as cli_main
from fish_speech.dataset.protos import Sentence, TextData, write_protos
from fish_speech.errors import UserError
from fish_speech.text2semantic.merge import merge_lora
from fish_speech.text2semantic.model import ModelConfig
from fish_speech.text2semantic.train import train
from fish_speech.text2semantic.training.data import split_validation

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"  # tiny golden model: 4 codebooks of 64
PROTOS = DATA / "protos" / "00000000.protos"  # golden protos for that model (5 groups, 8 sentences)
DEMO_PROTOS = DATA / "lora" / "demo-voice.protos"  # the demo voice: 10 codebooks of up to 4096 codes

# small and fast: every test run uses these unless it says otherwise
FAST = dict(batch_size=2, max_length=160, num_workers=0, log_every=1, learning_rate=1e-3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """An uninterrupted 6-step run, checkpoints every 2 steps."""
    out = tmp_path_factory.mktemp("straight")
    train(PROTOS, CKPT, out, max_steps=6, save_every=2, **FAST)
    return out


def test_outputs_and_upstream_checkpoint_format(straight, tmp_path):
    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert names == ["step_000000002.ckpt", "step_000000004.ckpt", "step_000000006.ckpt"]
    ckpt = torch.load(straight / "checkpoints" / names[-1], map_location="cpu", weights_only=True)
    # upstream's Lightning checkpoint keys, and a state_dict of LoRA tensors only, under upstream's names
    for key in (
        "epoch",
        "global_step",
        "pytorch-lightning_version",
        "state_dict",
        "loops",
        "callbacks",
        "optimizer_states",
        "lr_schedulers",
    ):
        assert key in ckpt, key
    assert ckpt["global_step"] == 6
    assert len(ckpt["state_dict"]) == 50
    assert all(k.startswith("model.") and k.endswith((".lora_A", ".lora_B")) for k in ckpt["state_dict"])
    assert ckpt["fish_speech"]["val_loss"] is not None

    metrics = json.loads((straight / "metrics.json").read_text())
    assert [r["step"] for r in metrics["train"]] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in metrics["val"]] == [2, 4, 6]
    first = metrics["train"][0]
    assert first["lr"] == 0.0 and metrics["train"][1]["lr"] == pytest.approx(1e-4)  # upstream's warm-up
    assert first["tokens"] > 0 and first["tokens_per_s"] > 0 and first["step_time_s"] > 0
    assert first["grad_norm"] > 0
    header = (straight / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("step,train_loss,") and "val_loss" in header
    assert (straight / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    summary = json.loads((straight / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["trainable_parameters"] == 109_056
    assert summary["earliest_checkpoint"] == names[0] and summary["last_checkpoint"] == names[-1]
    best = min(metrics["val"], key=lambda r: r["loss"])
    assert summary["best_checkpoint"] == f"step_{best['step']:09d}.ckpt"
    assert summary["best_val_loss"] == pytest.approx(best["loss"])
    assert summary["val_sentences"] == 1 and summary["train_sentences"] == 7  # SPK1's last clip held out
    assert summary["tokens_per_s"] > 0

    # a checkpoint merges straight away, picked by name
    merged = merge_lora(CKPT, "best", tmp_path / "merged", train_output=straight)
    assert (merged / "model.pth").is_file()


def test_resume_after_stop_matches_straight_run_and_skips_broken_files(straight, tmp_path):
    out = tmp_path / "run"
    train(PROTOS, CKPT, out, max_steps=4, save_every=2, **FAST)
    ckpts = out / "checkpoints"
    # a file cut short by a crash under a final name, and a temporary leftover: neither is picked
    good = (ckpts / "step_000000004.ckpt").read_bytes()
    (ckpts / "step_000000005.ckpt").write_bytes(good[: len(good) // 2])
    (ckpts / ".tmp-step_000000006.ckpt.abc").write_bytes(good)
    summary = train(PROTOS, CKPT, out, max_steps=6, save_every=2, resume=True, **FAST)
    assert summary["resumed_from"] == "step_000000004.ckpt"
    assert not (ckpts / ".tmp-step_000000006.ckpt.abc").exists()
    want, got = _lora(straight / "checkpoints" / "step_000000006.ckpt"), _lora(ckpts / "step_000000006.ckpt")
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)
    a = json.loads((straight / "metrics.json").read_text())["train"]
    b = json.loads((out / "metrics.json").read_text())["train"]
    assert [r["loss"] for r in b] == pytest.approx([r["loss"] for r in a], abs=1e-6)
    # finished: a rerun does nothing
    assert train(PROTOS, CKPT, out, max_steps=6, save_every=2, resume=True, **FAST)["steps"] == 6


@pytest.fixture(scope="module")
def straight_every(tmp_path_factory) -> Path:
    """The same uninterrupted 6-step run as `straight`, with a checkpoint after every step (all kept)."""
    out = tmp_path_factory.mktemp("straight-every")
    train(PROTOS, CKPT, out, max_steps=6, save_every=1, keep_last=0, **FAST)
    return out


def _train_argv(out: Path, num_workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "fish_speech",
        "train",
        "--data",
        str(PROTOS),
        "--base-weight",
        str(CKPT),
        "--output",
        str(out),
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--batch-size",
        "2",
        "--max-length",
        "160",
        "--num-workers",
        str(num_workers),
        "--log-every",
        "1",
        "--learning-rate",
        "1e-3",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "target"),
    [
        (signal.SIGKILL, "main"),
        (signal.SIGTERM, "main"),
        (signal.SIGTERM, "group"),
        (signal.SIGINT, "main"),
        (signal.SIGINT, "group"),
    ],
)
def test_signal_then_resume_matches_straight_run(straight, straight_every, tmp_path, sig, target):
    """SIGKILL: resume from the last checkpoint. SIGTERM (preemption, `timeout`) and SIGINT (Ctrl-C),
    sent to the main process or to its whole process group (loader workers included): the step in hand
    is checkpointed, the exit status is 143 / 130 with the --resume hint, and resuming ends exactly
    where an uninterrupted run does."""
    out = tmp_path / "stopped"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = 0 if sig == signal.SIGKILL else 2  # workers: the group signal must not kill them first
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            _train_argv(out, workers),
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group, so killpg reaches only this run
        )
        try:
            deadline = time.time() + 120
            while not (out / "checkpoints" / "step_000000002.ckpt").exists():
                assert proc.poll() is None, "training exited before its first checkpoint"
                assert time.time() < deadline, "no checkpoint within 120 s"
                time.sleep(0.02)
            if target == "group":
                os.killpg(proc.pid, sig)
            else:
                os.kill(proc.pid, sig)
        finally:
            proc.wait(timeout=120)
    stderr = (tmp_path / "stderr.txt").read_text(errors="replace")
    want_status = {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 143, signal.SIGINT: 130}[sig]
    assert proc.returncode == want_status, stderr[-2000:]
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*.ckpt"))
    if sig != signal.SIGKILL:
        assert "rerun with --resume" in stderr and "DataLoader worker" not in stderr, stderr[-2000:]
        # the checkpoint of the step in hand, identical to the uninterrupted run's at that step
        stopped = _lora(out / "checkpoints" / steps[-1])
        reference = _lora(straight_every / "checkpoints" / steps[-1])
        for k in reference:
            torch.testing.assert_close(stopped[k], reference[k], rtol=0, atol=1e-6)
    summary = train(PROTOS, CKPT, out, max_steps=6, save_every=2, resume=True, **FAST)
    assert summary["resumed_from"] == steps[-1]
    want, got = (
        _lora(straight / "checkpoints" / "step_000000006.ckpt"),
        _lora(out / "checkpoints" / "step_000000006.ckpt"),
    )
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def demo_base(tmp_path_factory) -> Path:
    """A tiny random model whose codebooks fit the demo voice's codes (10 codebooks of 4096)."""
    config = dataclasses.replace(ModelConfig.tiny(), num_codebooks=10, codebook_size=4096)
    return write_random_t2s(tmp_path_factory.mktemp("demo-base"), config=config, seed=0)


@pytest.mark.slow  # ~10 s on an idle 2-core machine, more when shared
def test_loss_goes_down_on_demo_voice(demo_base, tmp_path):
    out = tmp_path / "demo"
    opts = {**FAST, "max_length": 256, "learning_rate": 3e-3, "warmup_steps": 2}
    summary = train(DEMO_PROTOS, demo_base, out, max_steps=24, save_every=12, val_every=4, **opts)
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [r["loss"] for r in metrics["train"]]
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < first - 0.5, (first, last)
    val = [r["loss"] for r in metrics["val"]]
    assert val[-1] < val[0], val
    assert summary["val_groups"] == 2 and summary["val_sentences"] == 2  # one held-out clip per speaker


def test_too_long_sentences_are_skipped_and_windows_truncated(tmp_path):
    summary = train(PROTOS, CKPT, tmp_path / "run", max_steps=2, save_every=2, **{**FAST, "max_length": 105})
    skipped = summary["skipped_sentences"]
    assert skipped and all("longer than the maximum length 105" in s["reason"] for s in skipped)
    assert summary["train_sentences"] + summary["val_sentences"] + len(skipped) == 8


def test_split_validation_per_speaker():
    def group(name, n):
        return TextData(name=name, sentences=[Sentence(texts=[f"{name}{i}"]) for i in range(n)])

    train_groups, val_groups = split_validation(
        [group("a", 1), group("b", 2), group("c", 3), group("d", 20)], 0.1
    )
    assert [len(g.sentences) for g in train_groups] == [1, 2, 2, 18]
    assert [(g.name, [s.texts[0] for s in g.sentences]) for g in val_groups] == [
        ("c", ["c2"]),
        ("d", ["d18", "d19"]),
    ]
    assert split_validation([group("d", 20)], 0.0)[1] == []


def test_bad_inputs(tmp_path, capsys):
    empty = tmp_path / "empty"
    write_protos([TextData(source="folder", name="x")], empty)
    with pytest.raises(UserError, match="hold no sentences"):
        train(empty, CKPT, tmp_path / "o", **FAST)
    with pytest.raises(UserError, match="no-such: no such protos"):
        train(tmp_path / "no-such", CKPT, tmp_path / "o", **FAST)

    base = tmp_path / "base"
    shutil.copytree(CKPT, base)
    (base / "model.pth").unlink()
    with pytest.raises(UserError, match=r"base/model\.pth: missing"):
        train(PROTOS, base, tmp_path / "o", **FAST)
    shutil.copy(CKPT / "model.pth", base / "model.pth")
    (base / "config.json").write_text("{not json")
    with pytest.raises(UserError, match=r"config\.json"):
        train(PROTOS, base, tmp_path / "o", **FAST)

    with pytest.raises(UserError, match="longer than the maximum length 20"):  # nothing left to train on
        train(PROTOS, CKPT, tmp_path / "o", **{**FAST, "max_length": 20})
    with pytest.raises(UserError, match="--val-fraction"):
        train(PROTOS, CKPT, tmp_path / "o", val_fraction=1.5, **FAST)

    # an earlier run's checkpoints: refused without --resume/--overwrite; a resume with another rank too
    out = tmp_path / "run"
    train(PROTOS, CKPT, out, max_steps=1, save_every=1, **FAST)
    with pytest.raises(UserError, match="pass --resume"):
        train(PROTOS, CKPT, out, max_steps=2, **FAST)
    with pytest.raises(UserError, match="trained with LoRA r=8"):
        train(PROTOS, CKPT, out, max_steps=2, resume=True, lora_config="r_4_alpha_8", **FAST)
    argv = [
        "train",
        "--data",
        str(PROTOS),
        "--base-weight",
        str(CKPT),
        "--output",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--max-length",
        "160",
        "--num-workers",
        "0",
        "--overwrite",
    ]
    assert cli_main(argv) == 0
    assert "trained 1 steps" in capsys.readouterr().out
    assert cli_main([*argv[:-1], "--max-steps", "0"]) == 2


def test_checkpoint_writes_are_atomic(tmp_path):
    from fish_speech.text2semantic.training.checkpoints import find_resume_checkpoint, make_checkpoint_io

    io = make_checkpoint_io()
    target = tmp_path / "step_000000001.ckpt"
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable object
        io.save_checkpoint({"state_dict": {}, "bad": lambda: None}, target)
    assert list(tmp_path.iterdir()) == []  # neither a partial final file nor a temporary one
    io.save_checkpoint({"state_dict": {}}, target)
    assert io.load_checkpoint(target) == {"state_dict": {}}
    assert find_resume_checkpoint(tmp_path) is None  # loads, but is not a full training state


def test_bf16_mixed_precision_keeps_fp32_adapters(tmp_path):
    """The GPU default (bf16 base weights, fp32 adapters under autocast), run on the CPU."""
    summary = train(PROTOS, CKPT, tmp_path / "run", max_steps=2, save_every=2, precision="bf16-mixed", **FAST)
    assert summary["precision"] == "bf16-mixed"
    assert summary["final_train_loss"] is not None and summary["final_val_loss"] is not None
    state = _lora(tmp_path / "run" / "checkpoints" / "step_000000002.ckpt")
    assert {v.dtype for v in state.values()} == {torch.float32}
