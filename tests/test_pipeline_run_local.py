"""`pipeline.py --run-local`: which settings a local run uses, what it prints, and how a failure reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """`pipeline.main` with the DAG replaced by a recorder: the arguments a local run would use."""
    import pipeline
    import pipeline_cli

    real = pipeline.build_pipeline()
    calls: list[dict] = []

    class Recorder:
        pipeline_func = real.pipeline_func

        def __call__(self, **arguments):
            calls.append(arguments)
            root = Path(arguments["checkpoint_root"]).parent / "pipeline-root"
            (root / "fish-speech-lora-2026-01-01-10-00-00-000000").mkdir(parents=True)

    monkeypatch.setattr(pipeline_cli, "build_pipeline", lambda retries=True, **_: Recorder())
    return calls


def test_run_local_on_own_data_uses_the_pipeline_defaults(recorded, tmp_path, capsys):
    import pipeline

    data = tmp_path / "clips"
    data.mkdir()
    out = tmp_path / "out"
    assert (
        pipeline.main(["--run-local", "--data", str(data), "--output", str(out), "--param", "max_steps=3"])
        == 0
    )
    (args,) = recorded
    defaults = {k: p.default for k, p in pipeline.pipeline_parameters().items()}
    assert args["base_model"] == defaults["base_model"] == "hf://fishaudio/openaudio-s1-mini"
    for key in ("batch_size", "save_every", "vq_batch_size", "num_vq_shards"):
        assert args[key] == defaults[key], key
    assert args["max_steps"] == 3 and args["data_source"] == str(data.resolve())
    printed = capsys.readouterr().out
    assert "parameters of this run:" in printed
    assert "base_model              = hf://fishaudio/openaudio-s1-mini\n" in printed
    assert "max_steps               = 3  (--param)" in printed


def test_run_local_without_data_is_the_demo(recorded, tmp_path, capsys):
    import pipeline
    import pipeline_cli

    assert pipeline.main(["--run-local", "--output", str(tmp_path / "out")]) == 0
    (args,) = recorded
    assert args["data_source"] == str(pipeline_cli.DEMO_DATA)
    assert {k: args[k] for k in pipeline_cli.DEMO_DEFAULTS} == pipeline_cli.DEMO_DEFAULTS
    assert "base_model              = tiny  (demo)" in capsys.readouterr().out
    recorded.clear()
    assert (
        pipeline.main(
            ["--run-local", "--data", str(tmp_path), "--base", "tiny", "--output", str(tmp_path / "o2")]
        )
        == 0
    )
    assert recorded[0]["base_model"] == "tiny" and recorded[0]["max_steps"] == 1000


@pytest.mark.slow
def test_failed_local_run_names_the_step_and_its_reason(tmp_path):
    """A folder with no usable clip: one line naming validate and why, a run summary and a status report."""
    data = tmp_path / "clips" / "spk"
    data.mkdir(parents=True)
    sf.write(data / "a.wav", np.zeros((44100, 1), dtype=np.float32), 44100)
    (data / "a.lab").write_text("hello", encoding="utf-8")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), "--run-local", "--data", str(data.parent)]
        + ["--base", "tiny", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("pipeline.py --run-local: the local run failed at validate: ")
    assert "no usable clip (1 skipped: 1 x silent)" in err[-1] and str(data.parent) in err[-1]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "Got executor_input" not in proc.stdout and '"parameterValues"' not in proc.stdout
    summary = json.loads((out / "run-summary.json").read_text())
    assert summary["state"] == "FAILED"
    assert summary["failed"] == [
        {"task": "validate", "reason": f"{data.parent}: no usable clip (1 skipped: 1 x silent)"}
    ]
    status = Path(summary["status_report"]).read_text()
    assert status.startswith("# Run FAILED")
    assert f"| validate | {data.parent}: no usable clip (1 skipped: 1 x silent) |" in status
