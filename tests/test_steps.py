"""fish_speech/steps: the pipeline steps' runtime called without KFP (resume key, train step, merge)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fish_speech.steps.common import StepError, log_metrics, run_command
from fish_speech.steps.train import checkpoint_key, lora_train_step
from fish_speech.text2semantic.options import TrainOptions

DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"  # tiny golden model
PROTOS = DATA / "protos" / "00000000.protos"
FAST = dict(batch_size=2, max_length=160, num_workers=0, log_every=1, learning_rate=1e-3)
INPUTS = {"protos": "uri://protos", "base_model": "uri://base", "content_hash": "abc"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_checkpoint_key_covers_every_training_setting():
    base = TrainOptions(data=["p"], base_weight="b", output="o")
    key = checkpoint_key(base, INPUTS)
    assert key == checkpoint_key(dataclasses.replace(base, num_workers=8, output="elsewhere"), INPUTS)
    changed = {"warmup_steps": 11, "weight_decay": 0.1, "seed": 1, "lora_r": 4, "max_length": 100}
    for name, value in changed.items():
        assert checkpoint_key(dataclasses.replace(base, **{name: value}), INPUTS) != key, name
    assert checkpoint_key(base, {**INPUTS, "content_hash": "def"}) != key


def test_a_changed_training_option_does_not_resume_an_old_run(tmp_path):
    root = tmp_path / "ckpts"
    first = lora_train_step(
        str(PROTOS), str(CKPT), str(tmp_path / "a"), str(root), INPUTS, max_steps=2, save_every=2, **FAST
    )
    assert first["checkpoints"] == ["step_000000002.ckpt"]
    folder = Path(first["checkpoint_folder"])
    assert folder.parent == root / "lora-train"
    # the same settings again: the finished run is found, nothing is trained again
    stamp = (folder / "checkpoints" / "step_000000002.ckpt").stat().st_mtime_ns
    again = lora_train_step(
        str(PROTOS), str(CKPT), str(tmp_path / "b"), str(root), INPUTS, max_steps=2, save_every=2, **FAST
    )
    assert again["checkpoint_folder"] == str(folder)
    assert (folder / "checkpoints" / "step_000000002.ckpt").stat().st_mtime_ns == stamp
    # one more setting changed (not exposed by the pipeline today): its own folder, trained from step 0
    html = tmp_path / "loss.html"
    other = lora_train_step(
        str(PROTOS),
        str(CKPT),
        str(tmp_path / "c"),
        str(root),
        INPUTS,
        loss_html=str(html),
        max_steps=2,
        save_every=2,
        warmup_steps=1,
        **FAST,
    )
    assert other["checkpoint_folder"] != str(folder)
    summary = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert summary.get("resumed_from") in (None, "")
    assert other["metrics"]["checkpoints"] == 1 and other["metrics"]["steps"] == 2
    page = html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page
    assert len(list((root / "lora-train").iterdir())) == 2


def test_train_step_rejects_bad_settings_before_training(tmp_path):
    from fish_speech.errors import UserError

    with pytest.raises(UserError, match="--max-steps must be positive"):
        lora_train_step(str(PROTOS), str(CKPT), str(tmp_path / "o"), max_steps=0)
    assert not (tmp_path / "o").exists()


def test_run_command_raises_with_the_command_line(tmp_path):
    with pytest.raises(StepError, match=r"fish-speech validate .*nowhere exited with status 2") as e:
        run_command(["validate", tmp_path / "nowhere"])
    assert str(e.value).startswith(f"validate: {tmp_path / 'nowhere'}: ")  # the command's own reason first


def test_log_metrics_logs_and_writes_the_file(tmp_path):
    class FakeMetrics:  # the duck type of kfp.dsl.Metrics that log_metrics relies on
        def __init__(self, path):
            self.path, self.metadata = str(path), {}

        def log_metric(self, key, value):
            self.metadata[key] = value

    m = FakeMetrics(tmp_path / "m" / "metrics")
    log_metrics(m, {"clips": 3, "minutes": 1.5})
    assert json.loads(Path(m.path).read_text()) == {"clips": 3, "minutes": 1.5} == m.metadata
