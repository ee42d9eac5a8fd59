"""`fish-speech evaluate` end to end on tiny models: outputs, choice, rerun, failures and bad input."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from fish_speech.base_model.tiny import write_tiny_checkpoint
from fish_speech.cli import main as cli_main
from fish_speech.dataset.build_dataset import build_dataset
from fish_speech.evaluate.run import EvalOptions, evaluate, publish_decision
from fish_speech.text2semantic.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_voice):
    """Tiny base, the demo voice with random codes, protos, and a 4-step run with checkpoints at 2 and 4."""
    root = tmp_path_factory.mktemp("eval")
    base = write_tiny_checkpoint(root / "base")
    data = root / "data"
    shutil.copytree(demo_voice, data)
    rng = np.random.default_rng(0)
    for i, lab in enumerate(sorted(data.rglob("*.lab"))):
        np.save(lab.with_suffix(".npy"), rng.integers(0, 1024, size=(10, 15 + 3 * i)).astype(np.int64))
    build_dataset([data], root / "protos", num_workers=1)
    train(
        root / "protos",
        base,
        root / "train",
        max_steps=4,
        save_every=2,
        batch_size=2,
        max_length=256,
        num_workers=0,
        log_every=1,
        learning_rate=1e-3,
        val_fraction=0.25,
    )
    return {"root": root, "base": base, "data": data, "train": root / "train"}


def _opts(run, out, **kw):
    return EvalOptions(
        base_weight=str(run["base"]),
        train_output=str(run["train"]),
        data=str(run["data"]),
        output=str(out),
        asr="tiny",
        speaker_model="tiny",
        model_cache=str(run["root"] / "models"),
        sentences=3,
        max_new_tokens=24,
        device="cpu",
        **kw,
    )


def test_evaluate_end_to_end(run, tmp_path, capsys):
    out = tmp_path / "eval"
    code = cli_main(
        [
            "evaluate",
            "--base-weight",
            str(run["base"]),
            "--train-output",
            str(run["train"]),
            "--data",
            str(run["data"]),
            "--output",
            str(out),
            "--asr",
            "tiny",
            "--speaker-model",
            "tiny",
            "--model-cache",
            str(run["root"] / "models"),
            "--sentences",
            "3",
            "--max-new-tokens",
            "24",
            "--device",
            "cpu",
            "--checkpoints",
            "all",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "chosen: step_" in printed and "report.html" in printed
    result = json.loads((out / "eval.json").read_text())
    names = [c["name"] for c in result["candidates"]]
    assert names == ["real", "base", "step_000000002", "step_000000004"]
    assert result["choice"]["chosen"] in names[2:]
    assert result["choice"]["checkpoint_path"].endswith(result["choice"]["chosen"] + ".ckpt")
    assert len(result["utterances"]) == 3
    speakers = [u["speaker"] for u in result["utterances"]]
    assert speakers == ["anna", "ben", "anna"]  # round-robin over held-out clips
    for utt in result["utterances"]:
        assert set(utt["scores"]) == set(names)
        assert utt["prompt_clip"] != utt["real_clip"]
        for name, s in utt["scores"].items():
            assert s["cer"] >= 0.0 and -1.0 <= (s["similarity"] if s["similarity"] is not None else 0) <= 1.0
            if name != "real" and not s["failed"]:
                wav, sr = sf.read(out / "audio" / name / f"{utt['id']}.wav")
                assert sr == 44100 and len(wav) / sr == pytest.approx(s["seconds"], abs=1e-3)
                assert s["seconds"] <= 24 * 2048 / 44100 + 1e-6
    base_row = next(c for c in result["candidates"] if c["name"] == "base")
    assert base_row["val_loss"] is None and base_row["generation_seconds"] > 0
    steps = [c for c in result["candidates"] if c["step"]]
    assert all(c["val_loss"] is not None for c in steps)
    assert (out / "eval.csv").is_file() and (out / "report.html").stat().st_size < 3_000_000

    # rerun with the same inputs: nothing recomputed
    before = (out / "eval.json").stat().st_mtime_ns
    assert (
        cli_main(
            [
                "evaluate",
                "--base-weight",
                str(run["base"]),
                "--train-output",
                str(run["train"]),
                "--data",
                str(run["data"]),
                "--output",
                str(out),
                "--asr",
                "tiny",
                "--speaker-model",
                "tiny",
                "--model-cache",
                str(run["root"] / "models"),
                "--sentences",
                "3",
                "--max-new-tokens",
                "24",
                "--device",
                "cpu",
                "--checkpoints",
                "all",
            ]
        )
        == 0
    )
    assert (out / "eval.json").stat().st_mtime_ns == before


def test_in_memory_candidate_equals_its_merged_folder(run, tmp_path):
    from fish_speech.text2semantic.merge import merge_lora

    a = evaluate(_opts(run, tmp_path / "a", checkpoints="last"))
    b = evaluate(_opts(run, tmp_path / "b", checkpoints="earliest,last"))
    # the base and `last` rows do not depend on which other candidates are evaluated
    for name in ("base", "step_000000004"):
        for ua, ub in zip(a["utterances"], b["utterances"], strict=True):
            assert ua["scores"][name] == ub["scores"][name]
    # scoring the merged folder as a base model gives the checkpoint's audio exactly
    merged = merge_lora(run["base"], "last", tmp_path / "merged", train_output=run["train"])
    opts = _opts(run, tmp_path / "m", checkpoints="earliest")
    opts.base_weight = str(merged)
    m = evaluate(opts)
    for ua, um in zip(a["utterances"], m["utterances"], strict=True):
        assert um["scores"]["base"]["transcript"] == ua["scores"]["step_000000004"]["transcript"]
        wa, _ = sf.read(tmp_path / "a" / "audio" / "step_000000004" / f"{ua['id']}.wav")
        wm, _ = sf.read(tmp_path / "m" / "audio" / "base" / f"{um['id']}.wav")
        np.testing.assert_array_equal(wa, wm)


def test_a_candidate_that_stops_at_once_is_a_failure(run, tmp_path, monkeypatch):
    import fish_speech.synthesis as g

    real = g.generate

    def stop_at_once(model, prompts, settings, im_end_id, **kw):
        out = real(model, prompts, settings, im_end_id, **kw)
        for r in out:
            r.codes = r.codes[:, :0]
        return out

    monkeypatch.setattr(g, "generate", stop_at_once)
    result = evaluate(_opts(run, tmp_path / "e", checkpoints="last"))
    for c in result["candidates"][1:]:
        assert c["failures"] == 3 and c["cer"] == 1.0 and c["similarity"] == 0.0
    assert not result["choice"]["beats_base"]
    assert publish_decision(result, "if_better")[0] is False
    assert publish_decision(result, "always")[0] is True


@pytest.mark.parametrize(
    "change, message",
    [
        ({"asr": "/nonexistent/asr"}, "ASR model /nonexistent/asr"),
        ({"checkpoints": "step_7"}, "no checkpoint for step 7"),
        ({"sentences": 0}, "must be positive"),
        ({"temperature": 5}, "--temperature must be in"),
    ],
)
def test_bad_input_is_one_line(run, tmp_path, capsys, change, message):
    opts = _opts(run, tmp_path / "x")
    args = [
        "evaluate",
        "--base-weight",
        opts.base_weight,
        "--train-output",
        opts.train_output,
        "--data",
        opts.data,
        "--output",
        opts.output,
        "--asr",
        change.get("asr", "tiny"),
        "--speaker-model",
        "tiny",
        "--model-cache",
        opts.model_cache,
        "--device",
        "cpu",
        "--checkpoints",
        change.get("checkpoints", "last"),
        "--sentences",
        str(change.get("sentences", 2)),
        "--temperature",
        str(change.get("temperature", 0.8)),
    ]
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x" / "eval.json").exists()


def test_not_a_train_output(run, tmp_path, capsys):
    args = [
        "evaluate",
        "--base-weight",
        str(run["base"]),
        "--train-output",
        str(tmp_path),
        "--data",
        str(run["data"]),
        "--output",
        str(tmp_path / "o"),
        "--asr",
        "tiny",
        "--speaker-model",
        "tiny",
    ]
    assert cli_main(args) == 2
    assert "summary.json: not found" in capsys.readouterr().err
