"""`pipeline.py --run-local`: the whole DAG under kfp.local on the demo voice with tiny models.

The clips come from a loopback S3 bucket (moto) and lora-train syncs its checkpoints to an S3 prefix,
as on a cluster; `make demo` runs the same with local folders. The merged model must load; every
step's outputs must be where `run_local` says they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

STEPS = (
    "fetch-weights",
    "content-hash",
    "fetch-data",
    "validate",
    "normalize",
    "build-dataset",
    "lora-train",
)


@pytest.fixture(scope="module")
def s3(demo_voice):
    """A loopback S3 (moto) holding the demo voice under s3://clips/demo, and an empty s3://ckpts."""
    from minio import Minio
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        env = {
            "AWS_ACCESS_KEY_ID": "AKIALOCALTESTKEY0001",
            "AWS_SECRET_ACCESS_KEY": "local-test-secret",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        }
        client = Minio(
            f"127.0.0.1:{port}", env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"], secure=False
        )
        for bucket in ("clips", "ckpts"):
            client.make_bucket(bucket)
        for path in sorted(demo_voice.rglob("*")):
            if path.is_file():
                client.fput_object("clips", f"demo/{path.relative_to(demo_voice).as_posix()}", str(path))
        yield {"env": env, "client": client}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, s3) -> dict:
    """The whole pipeline: clips from s3://clips/demo, checkpoints synced to s3://ckpts/fish."""
    import os

    tmp = tmp_path_factory.mktemp("run-local")
    out = tmp / "out"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipeline.py"),
            "--run-local",
            "--data",
            "s3://clips/demo",
            "--base",
            "tiny",
            "--output",
            str(out),
            "--param",
            "max_steps=4",
            "--param",
            "checkpoint_root=s3://ckpts/fish",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp,
        env={**os.environ, **s3["env"]},
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    summary = json.loads((out / "run-summary.json").read_text())
    return {"summary": summary, "stdout": proc.stdout, "out": out, "s3": s3["client"]}


@pytest.mark.slow
def test_every_step_ran(local_run):
    run_dir = Path(local_run["summary"]["run_dir"])
    for step in (*STEPS, "merge-lora", "publish", "report-status"):
        assert list(run_dir.rglob(f"{step}/executor_output.json")), f"{step} did not run"
    shards = sorted(run_dir.glob("*/extract-vq/executor_output.json"))
    assert len(shards) == 2, "the local run fans extract-vq out over 2 shards"
    status = Path(local_run["summary"]["status_report"]).read_text()
    assert status.startswith("# Run SUCCEEDED")
    # what a successful run's status says: losses, the checkpoint merged, where the model went
    assert "| best validation loss |" in status and "| checkpoint merged | step_" in status
    assert f"| model published to | {local_run['summary']['published']} |" in status
    assert local_run["summary"]["state"] == "SUCCEEDED" and local_run["summary"]["failed"] == []


@pytest.mark.slow
def test_merged_model_loads(local_run):
    from fish_speech.text2semantic.checkpoint import load_model

    summary = local_run["summary"]
    for folder in (summary["merged_model"], summary["published"]):
        names = {p.name for p in Path(folder).iterdir()}
        assert {"model.pth", "config.json", "tokenizer.tiktoken", "special_tokens.json"} <= names, folder
        model = load_model(folder)
        assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.slow
def test_reports_and_metrics(local_run):
    summary = local_run["summary"]
    assert "anna" in Path(summary["validation_report"]).read_text()
    html = Path(summary["loss_plot"]).read_text()
    assert html.startswith("<!DOCTYPE html>") and "<h1>LoRA training: r_8_alpha_16</h1>" in html
    assert "data:image/png;base64," in html and "<th>best validation loss</th>" in html
    metrics = summary["metrics"]
    validate = next(m for task, m in metrics.items() if task.endswith("validate"))
    assert validate["clips"] == 16
    train = next(m for task, m in metrics.items() if task.endswith("lora-train"))
    assert train["checkpoints"] >= 1
    ckpts = sorted(Path(summary["lora_checkpoints"], "checkpoints").glob("step_*.ckpt"))
    assert ckpts
    # checkpoints were synced to the object-store prefix (checkpoint_root), where a retried task resumes
    keys = [o.object_name for o in local_run["s3"].list_objects("ckpts", prefix="fish/", recursive=True)]
    assert {k.rsplit("/", 1)[-1] for k in keys if "/checkpoints/" in k} == {p.name for p in ckpts}
    assert any(k.endswith("/summary.json") for k in keys)
    assert summary["merged_model"] in local_run["stdout"]


@pytest.mark.slow
def test_data_steps_outputs(local_run):
    """Shards split the clips exactly; extract-vq never writes into its input; protos hold every clip."""
    run_dir = Path(local_run["summary"]["run_dir"])
    normalized = run_dir / "normalize" / "normalized"
    wavs = {p.relative_to(normalized) for p in normalized.rglob("*.wav")}
    assert len(wavs) == 16
    shard_files = []
    for codes in sorted(run_dir.glob("for-loop-*-iteration-*/extract-vq/codes")):
        files = {p.relative_to(codes) for p in codes.rglob("*.npy")}
        assert files, f"{codes} holds no codes"
        assert not list(codes.rglob("*.wav")), "only the codes move to the shard's artifact"
        shard_files.append(files)
    assert len(shard_files) == 2 and not shard_files[0] & shard_files[1]
    assert shard_files[0] | shard_files[1] == {w.with_suffix(".npy") for w in wavs}
    assert not list(normalized.rglob("*.npy")), "extract-vq must not write into its input artifact"

    from fish_speech.dataset.protos import read_protos

    groups = list(read_protos(run_dir / "build-dataset" / "protos"))
    assert sorted(g.name for g in groups) == ["anna", "ben"]
    assert sum(len(g.sentences) for g in groups) == 16


@pytest.mark.slow
def test_checkpoint_auto_merges_evaluates_choice(local_run):
    summary = local_run["summary"]
    run_dir = Path(summary["run_dir"])
    (executor,) = run_dir.rglob("evaluate/executor_output.json")
    params = json.loads(executor.read_text())["parameterValues"]
    assert params["checkpoint"].startswith("step_") and params["publish"] in ("true", "false")
    info = json.loads(Path(summary["merged_model"], "merge_info.json").read_text())
    assert Path(info["lora_weight"]).name == params["checkpoint"] + ".ckpt"
    page = Path(summary["evaluation_report"]).read_text()
    assert "Checkpoint evaluation" in page and page.count("<audio") >= 4
    scored = next(m for task, m in summary["metrics"].items() if task.endswith("evaluate"))
    assert scored["publish"] == 1  # with --base tiny the local run's publish_policy is "always"
