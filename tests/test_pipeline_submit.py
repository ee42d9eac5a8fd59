"""`pipeline.py --submit` and `--schedule` against a local HTTP server standing in for the KFP API.

The server records every request; the tests check the cron, the parameters and the pipeline spec that
arrived, exactly as the KFP API server would receive them.
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

pytestmark = pytest.mark.filterwarnings("ignore:This client only works:FutureWarning")


class FakeKfpApi(BaseHTTPRequestHandler):
    """Just enough of KFP's v2beta1 REST API for kfp.Client: healthz, experiments, runs, recurring runs."""

    requests: list[dict] = []
    # what GET /runs/{id} answers: a run whose validate task failed inside the exit handler's DAG
    run_record: dict = {
        "display_name": "fish-speech-lora 2026-01-01",
        "state": "FAILED",
        "created_at": "2026-01-01T10:00:00Z",
        "run_details": {
            "task_details": [
                {"display_name": "fish-speech-lora", "state": "FAILED", "child_tasks": [{"task_id": "1"}]},
                {"display_name": "exit-handler-1", "state": "FAILED", "child_tasks": [{"task_id": "2"}]},
                {"display_name": "fetch-data", "state": "SUCCEEDED"},
                {
                    "display_name": "validate",
                    "state": "FAILED",
                    "error": {
                        "code": 2,
                        "message": "Traceback (most recent call last):\n  ...\n"
                        "RuntimeError: validate: s3://clips/anna: no usable clip (3 skipped: 3 x silent)",
                    },
                },
                {"display_name": "report-status", "state": "RUNNING"},
            ]
        },
    }

    def _reply(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        path = self.path.split("?", 1)[0]
        self.requests.append(
            {
                "method": self.command,
                "path": path,
                "query": self.path,
                "body": body,
                "auth": self.headers.get("Authorization"),
            }
        )
        if path == "/apis/v2beta1/healthz":
            reply = {"multi_user": False}
        elif path == "/apis/v2beta1/experiments" and self.command == "GET":
            reply = {}  # no experiment of that name yet
        elif path == "/apis/v2beta1/experiments":
            reply = {"experiment_id": "exp-1", "display_name": body["display_name"]}
        elif path.startswith("/apis/v2beta1/experiments/"):
            reply = {"experiment_id": "exp-1", "display_name": "fish-speech-lora"}
        elif path.startswith("/apis/v2beta1/runs/") and self.command == "GET":
            reply = self.run_record | {"run_id": path.rsplit("/", 1)[-1]}
        elif path == "/apis/v2beta1/runs" and self.command == "POST":
            reply = {"run_id": "run-42", "experiment_id": body.get("experiment_id")}
        elif path == "/apis/v2beta1/recurringruns" and self.command == "POST":
            reply = {"recurring_run_id": "rr-7", "display_name": body.get("display_name")}
        else:
            self.send_error(404)
            return
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _reply

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def kfp_api():
    FakeKfpApi.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKfpApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", FakeKfpApi.requests
    finally:
        server.shutdown()
        server.server_close()


def _posts(requests: list[dict], path: str) -> list[dict]:
    return [r["body"] for r in requests if r["method"] == "POST" and r["path"] == path]


def _check_spec(pipeline_spec: dict) -> None:
    """The uploaded spec is this pipeline's, with its platform spec."""
    spec = pipeline_spec["pipeline_spec"]
    assert spec["pipelineInfo"]["name"] == "fish-speech-lora"
    tasks = set()
    for comp in spec["components"].values():  # lora-train sits in a branch (one pod / a TrainJob)
        tasks |= set(comp.get("dag", {}).get("tasks", {}))
    assert {"fetch-weights", "validate", "normalize", "build-dataset", "lora-train", "merge-lora"} <= tasks
    executors = pipeline_spec["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "tolerations" in executors["exec-lora-train"]


def test_submit(kfp_api, capsys):
    import pipeline

    host, requests = kfp_api
    status = pipeline.main(
        [
            "--submit",
            "--host",
            host,
            "--experiment",
            "voices",
            "--param",
            "max_steps=250",
            "--param",
            "data_source=s3://clips/anna",
            "--param",
            'gpu_node_selector={"pool": "l4"}',
            "--service-account",
            "fish-speech-pipeline",
            "--registry",
            "reg.example/team",
        ]
    )
    assert status == 0
    assert "run-42" in capsys.readouterr().out
    experiments = _posts(requests, "/apis/v2beta1/experiments")
    assert [e["display_name"] for e in experiments] == ["voices"]
    (run,) = _posts(requests, "/apis/v2beta1/runs")
    assert run["experiment_id"] == "exp-1"
    assert run["runtime_config"]["parameters"] == {
        "max_steps": 250,
        "data_source": "s3://clips/anna",
        "gpu_node_selector": {"pool": "l4"},
    }
    assert run["service_account"] == "fish-speech-pipeline"
    _check_spec(run["pipeline_spec"])


def test_schedule(kfp_api, capsys):
    import pipeline

    host, requests = kfp_api
    status = pipeline.main(
        [
            "--schedule",
            "30 2 * * *",
            "--host",
            host,
            "--max-concurrency",
            "1",
            "--no-catchup",
            "--param",
            "publish_destination=gs://models/anna",
            "--param",
            "num_vq_shards=4",
            "--registry",
            "reg.example/team",
        ]
    )
    assert status == 0
    assert "rr-7" in capsys.readouterr().out
    (job,) = _posts(requests, "/apis/v2beta1/recurringruns")
    assert job["experiment_id"] == "exp-1"
    assert job["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"  # KFP's 6-field form
    assert int(job["max_concurrency"]) == 1
    assert job["no_catchup"] is True
    assert job["mode"] == "ENABLE"
    assert job["runtime_config"]["parameters"] == {
        "publish_destination": "gs://models/anna",
        "num_vq_shards": 4,
    }
    _check_spec(job["pipeline_spec"])


def test_schedule_rejects_a_bad_cron(kfp_api):
    import pipeline

    host, requests = kfp_api
    with pytest.raises(SystemExit, match="cron"):
        pipeline.main(["--schedule", "every night", "--host", host])
    assert not requests


def test_submit_needs_a_host():
    import pipeline

    with pytest.raises(SystemExit):
        pipeline.main(["--submit"])


def test_status_report_asks_the_kfp_api_for_the_failed_step(kfp_api, tmp_path, monkeypatch):
    """On a cluster report-status names the failed step and its reason from the KFP API's run record."""
    import datetime as dt

    from fish_speech.status import one_line_summary, render_status, status_record

    host, requests = kfp_api
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(tmp_path / "token"))
    (tmp_path / "token").write_text("sa-token\n")
    now = dt.datetime(2026, 1, 1, 10, 42, 5, tzinfo=dt.timezone.utc).timestamp()
    record = status_record(
        "FAILED",
        run_id="run-42",
        error_message="Task exit-handler-1 failed.",
        sources={"data_source": "s3://clips/anna", "base_model": "hf://fishaudio/openaudio-s1-mini"},
        run_dir=tmp_path / "outputs",  # a pod's output folder, not a kfp.local run folder
        api_host=host,
        now=now,
    )
    (get,) = [r for r in requests if r["path"] == "/apis/v2beta1/runs/run-42"]
    assert get["method"] == "GET" and get["auth"] == "Bearer sa-token"
    assert record["failed"] == [
        {
            "task": "validate",
            "reason": "RuntimeError: validate: s3://clips/anna: no usable clip (3 skipped: 3 x silent)",
        }
    ]
    assert record["duration_s"] == 42 * 60 + 5
    text = render_status(record)
    assert text.startswith("# Run FAILED")
    assert "after 42 min 5 s" in text
    assert "| validate | RuntimeError: validate: s3://clips/anna: no usable clip" in text
    assert "exit-handler" not in text
    assert one_line_summary(record).startswith("FAILED: validate: ")


def test_status_report_without_the_kfp_api_says_so(tmp_path):
    from fish_speech.status import render_status, status_record

    record = status_record("FAILED", run_id="run-1", run_dir=tmp_path, api_host="http://127.0.0.1:9")
    text = render_status(record)
    assert "could not ask the KFP API about run run-1" in text
    assert "no failed step was recorded" in text
