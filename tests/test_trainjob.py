"""The TrainJob of multi-node training: the object (validated by the Kubeflow Trainer API models) and
create / wait / delete against a loopback fake Kubernetes API (success, a failing pod, a timeout, a
retried step while the TrainJob exists, a cancelled step)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

pytest.importorskip("kubeflow_trainer_api")
pytest.importorskip("kubernetes")

from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob  # noqa: E402

from fish_speech.kube.trainjob import (  # noqa: E402
    TrainJobError,
    TrainJobRequest,
    TrainJobRunner,
    build_trainjob,
    kube_api_client,
    stage_tree,
    trainjob_name,
)

NS = "kubeflow"
TJ_PATH = re.compile(rf"^/apis/trainer\.kubeflow\.org/v1alpha1/namespaces/{NS}/trainjobs(?:/([^/?]+))?$")


def _request(nodes: int = 2, name: str = "fish-speech-train-0123456789abcdef") -> TrainJobRequest:
    return TrainJobRequest(
        name=name,
        namespace=NS,
        image="ghcr.io/example/fish-speech-gpu@sha256:" + "0" * 64,
        train_args=["--data", "/mnt/fish-speech/in/protos", "--output", "/mnt/fish-speech/ckpt", "--resume"],
        num_nodes=nodes,
        gpus_per_node=8,
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        pvc="fish-speech-workspace",
        mount_path="/mnt/fish-speech",
        secret_env={"HF_TOKEN": ("fish-speech-hf", "HF_TOKEN")},
    )


@pytest.mark.parametrize("nodes", [1, 2, 4])
def test_trainjob_object_is_valid_for_the_api_models(nodes):
    obj = build_trainjob(_request(nodes))
    d = obj.to_dict()
    # a round trip through the API models keeps every field (unknown or mistyped ones would be lost or raise)
    assert TrainerV1alpha1TrainJob.from_dict(json.loads(json.dumps(d))).to_dict() == d
    assert d["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and d["kind"] == "TrainJob"
    trainer = d["spec"]["trainer"]
    assert trainer["numNodes"] == nodes and trainer["numProcPerNode"] == 8
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": "8"}}
    assert trainer["command"] == ["torchrun", "-m", "fish_speech", "train"]
    assert trainer["args"][-1] == "--resume"
    assert d["spec"]["runtimeRef"] == {"name": "torch-distributed"}
    # the secret goes by reference only
    assert trainer["env"][0] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"key": "HF_TOKEN", "name": "fish-speech-hf", "optional": True}},
    }
    pod = d["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    assert pod["name"] == "node"
    spec = pod["template"]["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "workspace", "persistentVolumeClaim": {"claimName": "fish-speech-workspace"}} in spec[
        "volumes"
    ]
    mounts = spec["containers"][0]["volumeMounts"]
    assert {"mountPath": "/mnt/fish-speech", "name": "workspace"} in mounts
    name = d["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 40


def test_trainjob_name_is_stable_and_valid():
    assert trainjob_name("0123456789ABCDEF99") == trainjob_name("0123456789abcdef99")
    assert re.fullmatch(r"[a-z][-a-z0-9]*", trainjob_name("ab/CD_12"))


# ---- a loopback fake of the Kubernetes API ----


def _pod(name: str, jobset: str, *, terminated=None, waiting=None, phase="Running") -> dict:
    state = {"terminated": terminated} if terminated else {"waiting": waiting} if waiting else {"running": {}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"jobset.sigs.k8s.io/jobset-name": jobset}},
        "status": {
            "phase": phase,
            "containerStatuses": [
                {
                    "name": "node",
                    "image": "img",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        },
    }


class FakeKube:
    """TrainJobs, pods and events in memory; `advance(obj, gets)` evolves a TrainJob on each GET."""

    def __init__(self, advance=None) -> None:
        self.trainjobs: dict[str, dict] = {}
        self.pods: list[dict] = []
        self.events: list[dict] = []
        self.created: list[dict] = []
        self.deleted: list[str] = []
        self.gets = 0
        self.advance = advance or (lambda obj, gets: None)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _missing(self, name: str) -> None:
                self._send(
                    404,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "status": "Failure",
                        "reason": "NotFound",
                        "code": 404,
                        "message": f"trainjobs {name} not found",
                    },
                )

            def do_GET(self):
                url = urlparse(self.path)
                m = TJ_PATH.match(url.path)
                if m and m.group(1):
                    obj = fake.trainjobs.get(m.group(1))
                    if obj is None:
                        return self._missing(m.group(1))
                    fake.gets += 1
                    fake.advance(obj, fake.gets)
                    return self._send(200, obj)
                if url.path == f"/api/v1/namespaces/{NS}/pods":
                    selector = parse_qs(url.query).get("labelSelector", [""])[0]
                    key, _, value = selector.partition("=")
                    items = [p for p in fake.pods if p["metadata"]["labels"].get(key) == value]
                    return self._send(
                        200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                    )
                if url.path == f"/api/v1/namespaces/{NS}/events":
                    return self._send(
                        200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": fake.events}
                    )
                self._send(404, {"kind": "Status", "code": 404})

            def do_POST(self):
                m = TJ_PATH.match(urlparse(self.path).path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not m or m.group(1):
                    return self._send(404, {"kind": "Status", "code": 404})
                name = body["metadata"]["name"]
                if name in fake.trainjobs:
                    return self._send(409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
                fake.created.append(body)
                fake.trainjobs[name] = json.loads(json.dumps(body))
                self._send(201, body)

            def do_DELETE(self):
                m = TJ_PATH.match(urlparse(self.path).path)
                name = m.group(1) if m else ""
                if fake.trainjobs.pop(name, None) is None:
                    return self._missing(name)
                fake.deleted.append(name)
                self._send(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def runner(self) -> TrainJobRunner:
        return TrainJobRunner(kube_api_client(self.url), NS, poll_s=0.01)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kube():
    fakes: list[FakeKube] = []

    def make(advance=None) -> FakeKube:
        fakes.append(FakeKube(advance))
        return fakes[-1]

    yield make
    for f in fakes:
        f.close()


def _set_condition(obj: dict, kind: str, reason: str = "", message: str = "") -> None:
    obj.setdefault("status", {})["conditions"] = [
        {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ]


def test_success_creates_waits_and_deletes(kube):
    def advance(obj, gets):
        obj["status"] = {
            "jobsStatus": [
                {"name": "node", "active": 2, "ready": 2, "succeeded": 0, "failed": 0, "suspended": 0}
            ]
        }
        if gets >= 3:
            _set_condition(obj, "Complete", "JobsCompleted", "all jobs completed")

    fake = kube(advance)
    req = _request()
    final = fake.runner().run(req, timeout_s=30)
    assert final["status"]["conditions"][0]["type"] == "Complete"
    assert fake.created == [build_trainjob(req).to_dict()]  # the object as built, once
    assert fake.deleted == [req.name] and not fake.trainjobs


def test_failing_pod_reason_in_one_line(kube):
    req = _request()

    def advance(obj, gets):
        if gets >= 2:
            _set_condition(obj, "Failed", "FailedJobs", "jobset failed")

    fake = kube(advance)
    fake.pods = [
        _pod(f"{req.name}-node-0-0-x", req.name),
        _pod(
            f"{req.name}-node-0-1-y",
            req.name,
            phase="Failed",
            terminated={"exitCode": 137, "reason": "OOMKilled", "message": "Traceback...\nout of memory\n"},
        ),
        _pod("other-node-0-0-z", "other", terminated={"exitCode": 1, "reason": "Error"}),
    ]
    with pytest.raises(TrainJobError) as e:
        fake.runner().run(req, timeout_s=30)
    text = str(e.value)
    assert "\n" not in text
    assert (
        text
        == f"TrainJob {req.name} failed: pod {req.name}-node-0-1-y: container node OOMKilled (exit 137): out of memory"
    )
    assert fake.deleted == [req.name]


def test_timeout_says_why_and_deletes(kube):
    req = _request()
    fake = kube()
    fake.pods = [
        _pod(
            f"{req.name}-node-0-0-x",
            req.name,
            phase="Pending",
            waiting={"reason": "ImagePullBackOff", "message": 'Back-off pulling image "img"'},
        )
    ]
    with pytest.raises(
        TrainJobError,
        match=r"not finished after 0\.3 s .*container node ImagePullBackOff: Back-off pulling image",
    ):
        fake.runner().run(req, timeout_s=0.3)
    assert fake.deleted == [req.name]


def test_retried_step_adopts_the_running_trainjob(kube):
    req = _request()

    def advance(obj, gets):
        if gets >= 3:
            _set_condition(obj, "Complete")

    fake = kube(advance)
    fake.trainjobs[req.name] = build_trainjob(req).to_dict()  # left by the attempt that was preempted
    fake.runner().run(req, timeout_s=30)
    assert fake.created == []  # waited for it instead of starting again
    assert fake.deleted == [req.name]


def test_retried_step_replaces_a_failed_trainjob(kube):
    req = _request()
    old = build_trainjob(req).to_dict()
    _set_condition(old, "Failed", "FailedJobs", "node lost")

    def advance(obj, gets):
        if obj is not old:  # the new one completes
            _set_condition(obj, "Complete")

    fake = kube(advance)
    fake.trainjobs[req.name] = old
    fake.runner().run(req, timeout_s=30)
    assert len(fake.created) == 1  # a new TrainJob, which resumes from the checkpoints (--resume)
    assert fake.deleted == [req.name, req.name]


def test_cancelled_step_deletes_the_trainjob(kube):
    req = _request()
    fake = kube()
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with pytest.raises(TrainJobError, match="cancelled"):
            fake.runner().run(req, timeout_s=60)
    finally:
        timer.cancel()
    assert fake.deleted == [req.name]
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back


def test_missing_trainer_crd_is_one_line(kube):
    fake = kube()
    fake.server.RequestHandlerClass.do_POST = lambda self: self._send(404, {"kind": "Status", "code": 404})
    with pytest.raises(TrainJobError, match=r"cannot create it \(404 .*is Kubeflow Trainer installed"):
        fake.runner().run(_request(), timeout_s=5)


def test_stage_tree_copies_once(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(b"abc")
    (src / "sub" / "b.txt").write_text("b")
    dst = stage_tree(src, tmp_path / "dst")
    assert (dst / "a.bin").read_bytes() == b"abc" and (dst / "sub" / "b.txt").read_text() == "b"
    mtime = (dst / "a.bin").stat().st_mtime_ns
    stage_tree(src, dst)
    assert (dst / "a.bin").stat().st_mtime_ns == mtime


def test_inputs_staged_on_the_pvc_and_the_trainjob_run(kube, tmp_path):
    from fish_speech.kube.trainjob import stage_inputs, train_on_trainjob

    fake = kube(lambda obj, gets: _set_condition(obj, "Complete"))
    mount = tmp_path / "pvc"
    protos, base = tmp_path / "protos", tmp_path / "base"
    protos.mkdir()
    (protos / "00000000.protos").write_bytes(b"p")
    base.mkdir()
    for name in ("model.pth", "config.json", "codec.pth"):
        (base / name).write_bytes(name.encode())
    results = mount / "checkpoints" / "lora-train" / "0123456789abcdef"
    staged_protos, staged_base = stage_inputs(results, protos, base, "fish-speech-workspace", str(mount), 4)
    inputs = results.parent / "0123456789abcdef.inputs"
    assert (staged_protos, staged_base) == (inputs / "protos", inputs / "base")
    assert (inputs / "protos" / "00000000.protos").read_bytes() == b"p"
    assert sorted(p.name for p in staged_base.iterdir()) == ["config.json", "model.pth"]  # no codec
    argv = ["--data", str(staged_protos), "--base-weight", str(staged_base), "--output", str(results)]
    final = train_on_trainjob(
        [*argv, "--resume"],
        key="0123456789abcdef",
        num_nodes=4,
        gpus_per_node=8,
        image="img",
        pvc="fish-speech-workspace",
        mount_path=str(mount),
        api_client=kube_api_client(fake.url),
        namespace=NS,
    )
    assert condition_true(final, "Complete")
    body = fake.created[0]
    assert body["metadata"]["name"] == trainjob_name("0123456789abcdef")
    assert body["spec"]["trainer"]["numNodes"] == 4
    assert body["spec"]["trainer"]["args"] == [*argv, "--resume"]
    assert fake.deleted == [body["metadata"]["name"]]


def test_inputs_need_the_shared_volume(tmp_path):
    from fish_speech.errors import UserError
    from fish_speech.kube.trainjob import stage_inputs

    with pytest.raises(UserError, match=r"must be on the workspace PVC \(ws at .*ReadWriteMany"):
        stage_inputs(tmp_path / "local", tmp_path, tmp_path, "ws", str(tmp_path / "pvc"), 2)


def condition_true(obj: dict, kind: str) -> bool:
    from fish_speech.kube.trainjob import condition

    return condition(obj, kind) is not None


def test_step_on_nodes_collects_the_trainjob_output(kube, tmp_path, monkeypatch):
    """lora_train_step with train_nodes 2: inputs staged, the TrainJob (here: its command run by the fake
    API when the TrainJob is created, in one process) trains into the PVC folder, the step collects it."""
    from pathlib import Path

    from fish_speech.cli import main as cli_main
    from fish_speech.steps.train import TrainJobPlan, lora_train_step

    data = Path(__file__).parent / "data" / "t2s"

    def advance(obj, gets):
        if gets == 1:  # the "cluster" runs the TrainJob's command
            assert obj["spec"]["trainer"]["command"] == ["torchrun", "-m", "fish_speech", "train"]
            assert cli_main(["train", *obj["spec"]["trainer"]["args"]]) == 0
            _set_condition(obj, "Complete")

    fake = kube(advance)
    mount = tmp_path / "pvc"
    import fish_speech.kube.trainjob as tj

    real = tj.kube_api_client
    monkeypatch.setattr(tj, "kube_api_client", lambda host=None: real(fake.url))  # the step's cluster
    result = lora_train_step(
        str(data / "protos"),
        str(data / "ckpt"),
        str(tmp_path / "artifact"),
        checkpoint_root=str(mount / "checkpoints"),
        trainjob=TrainJobPlan(num_nodes=2, gpus_per_node=1, image="img", pvc="ws", mount_path=str(mount)),
        max_steps=2,
        save_every=2,
        batch_size=2,
        max_length=160,
        num_workers=0,
    )
    assert result["checkpoints"] == ["step_000000002.ckpt"]
    assert (tmp_path / "artifact" / "checkpoints" / "step_000000002.ckpt").is_file()
    assert result["checkpoint_folder"].startswith(str(mount / "checkpoints" / "lora-train"))
    body = fake.created[0]
    assert body["spec"]["trainer"]["numNodes"] == 2 and "--resume" in body["spec"]["trainer"]["args"]
    assert fake.deleted == [body["metadata"]["name"]]
