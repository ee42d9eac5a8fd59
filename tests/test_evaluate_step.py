"""The evaluate pipeline step on planted scores: checkpoint=auto merges the choice, if_better gates publishing."""

import json
from pathlib import Path

import pytest

import fish_speech.cli
from fish_speech.evaluate.run import publish_decision
from fish_speech.steps.common import StepError
from fish_speech.steps.evaluate import evaluate_step


def _planted(chosen="step_000000004", base=(0.80, 0.10), ckpts=None):
    ckpts = ckpts or {"step_000000002": (0.70, 0.10), "step_000000004": (0.72, 0.11)}
    rows = [{"name": "real", "step": None, "similarity": 0.9, "cer": 0.05}]
    rows.append({"name": "base", "step": None, "similarity": base[0], "cer": base[1], "utterances": 8})
    for name, (sim, cer) in ckpts.items():
        rows.append({"name": name, "step": int(name[5:]), "similarity": sim, "cer": cer, "utterances": 8})
    return {
        "candidates": rows,
        "choice": {"chosen": chosen, "beats_base": False, "similarity_margin": 0.02, "cer_margin": 0.02},
        "timing": {"total_s": 12.5},
    }


@pytest.fixture
def train_output(tmp_path):
    out = tmp_path / "train"
    (out / "checkpoints").mkdir(parents=True)
    for step in (2, 4):
        (out / "checkpoints" / f"step_{step:09d}.ckpt").write_bytes(b"x")
    return out


@pytest.fixture
def fake_evaluate(monkeypatch):
    """`fish-speech evaluate` replaced by one that writes the planted eval.json and records its argv."""
    calls = []

    def install(result):
        def main(argv):
            calls.append(argv)
            out = Path(argv[argv.index("--output") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "eval.json").write_text(json.dumps(result))
            (out / "report.html").write_text("<html></html>")
            return 0

        monkeypatch.setattr(fish_speech.cli, "main", main)
        return calls

    return install


def test_auto_merges_the_choice_and_if_better_refuses_a_worse_model(tmp_path, train_output, fake_evaluate):
    calls = fake_evaluate(_planted())
    out = evaluate_step("BASE", str(train_output), str(tmp_path), ["s0", "s1"], str(tmp_path / "eval"))
    assert out["checkpoint"] == "step_000000004"
    assert out["publish"] == "false"
    assert out["publish_reason"].startswith("not published: step_000000004 does not beat the base model")
    assert "similarity 0.720 is not above the base's 0.800" in out["publish_reason"]
    assert out["metrics"]["chosen_similarity"] == 0.72 and out["metrics"]["publish"] == 0
    assert calls[0][calls[0].index("--checkpoints") + 1] == "earliest,best,last"
    assert [calls[0][i + 1] for i, a in enumerate(calls[0]) if a == "--codes"] == ["s0", "s1"]

    out = evaluate_step(
        "BASE", str(train_output), str(tmp_path), [], str(tmp_path / "eval"), publish_policy="always"
    )
    assert out["publish"] == "true"


def test_if_better_publishes_an_improvement(tmp_path, train_output, fake_evaluate):
    fake_evaluate(_planted(base=(0.60, 0.10)))
    out = evaluate_step("BASE", str(train_output), str(tmp_path), [], str(tmp_path / "eval"))
    assert out["publish"] == "true" and "beats the base model" in out["publish_reason"]


def test_an_explicit_checkpoint_is_merged_and_scored(tmp_path, train_output, fake_evaluate):
    calls = fake_evaluate(_planted(base=(0.71, 0.10)))
    out = evaluate_step(
        "BASE",
        str(train_output),
        str(tmp_path),
        [],
        str(tmp_path / "eval"),
        checkpoint="earliest",
        checkpoints="last",
    )
    assert out["checkpoint"] == "step_000000002"  # not evaluate's choice
    assert calls[0][calls[0].index("--checkpoints") + 1] == "last,earliest"
    # the gate looks at the merged checkpoint: 0.70 < base 0.71
    assert out["publish"] == "false" and "step_000000002" in out["publish_reason"]
    with pytest.raises(StepError, match="publish_policy"):
        evaluate_step(
            "BASE", str(train_output), str(tmp_path), [], str(tmp_path / "e"), publish_policy="maybe"
        )


def test_publish_decision_for_a_checkpoint_that_was_not_scored():
    ok, why = publish_decision(_planted(), "if_better", "step_000000099")
    assert not ok and "was not evaluated" in why
