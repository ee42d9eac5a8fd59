"""With a container engine (podman or docker) that answers: push records the digest a real registry serves, and
`make image-smoke` passes. Skipped, with the reason, where no engine runs (CI here has none)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "images"))

import build  # noqa: E402  (images/build.py)

AIRGAP_BASE = "localhost/fish-speech-base:bookworm"
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)


@pytest.fixture(scope="module")
def engine() -> str:
    for name in build.ENGINES[::-1]:  # podman first: it needs no daemon
        if build.engine_answers(name):
            return name
    pytest.skip("no container engine answers here (podman, docker): images/airgap.sh engine installs podman")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry(tmp_path):
    """A Docker distribution registry on 127.0.0.1 (Debian's docker-registry package); yields HOST:PORT."""
    exe = shutil.which("docker-registry") or shutil.which("registry")
    if not exe:
        pytest.skip("no local registry binary (apt-get install docker-registry)")
    port = _free_port()
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path / 'storage'}\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            pytest.fail(f"the registry did not start: {proc.stderr.read1().decode() if proc.stderr else ''}")
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _served_digest(registry: str, repo: str, tag: str) -> str:
    req = urllib.request.Request(
        f"http://{registry}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": MANIFEST_TYPES}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.headers["Docker-Content-Digest"]


def test_push_records_the_digest_the_registry_serves(engine, registry, tmp_path):
    """A small image pushed with build.py: images.json gets the registry's manifest digest, and a pull by
    that digest works (podman's local digest differs: it compresses the layers on push)."""
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "hello.txt").write_text(f"digest test {time.time()}\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(root, arcname=".")
    ref = f"{registry}/fish-speech-digest-test:v1"
    subprocess.run([engine, "import", str(tmp_path / "rootfs.tar"), ref], check=True, capture_output=True)
    try:
        record = tmp_path / "images.json"
        shutil.copy(REPO / "images" / "images.json", record)
        config = json.loads(record.read_text())
        config["images"] = {"cpu": {**config["images"]["cpu"], "name": "fish-speech-digest-test"}}
        record.write_text(json.dumps(config))
        digest = build.push(engine, ref, tls_verify=False)
        build.record_digests({ref: digest}, record)
        assert json.loads(record.read_text())["digests"][ref] == digest
        assert digest == _served_digest(registry, "fish-speech-digest-test", "v1")
        pull = [
            engine,
            "pull",
            *(["--tls-verify=false"] if engine == "podman" else []),
            f"{ref.rsplit(':', 1)[0]}@{digest}",
        ]
        subprocess.run(pull, check=True, capture_output=True, timeout=120)
    finally:
        subprocess.run([engine, "rmi", "-f", ref], capture_output=True)


def _smoke_command(engine: str) -> list[str] | None:
    """How this machine can build the CPU image: the air-gapped recipe where its base and wheelhouse
    exist, else the ordinary build when the pinned base is pullable (already present)."""

    def has(image: str) -> bool:
        return subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode == 0

    if has(AIRGAP_BASE) and (REPO / "images" / ".wheelhouse" / "simple").is_dir():
        return ["bash", str(REPO / "images" / "airgap.sh"), "smoke"]
    dockerfile = (REPO / "images" / "cpu.Dockerfile").read_text()
    base = next(
        line.split("=", 1)[1] for line in dockerfile.splitlines() if line.startswith("ARG BASE_IMAGE=")
    )
    if has(base):
        return ["bash", str(REPO / "images" / "smoke.sh")]
    return None


@pytest.mark.slow
def test_image_smoke(engine):
    """make image-smoke: build the CPU image and check it (non-root, pip check, CPU torch, fetch-weights,
    compile, a component replayed as KFP's launcher runs it, the workspace volume)."""
    cmd = _smoke_command(engine)
    if cmd is None:
        pytest.skip(
            "no base image for the CPU build here: pull the pinned base, or run images/airgap.sh base and "
            "images/airgap.sh wheelhouse (then make image-smoke AIRGAP=1)"
        )
    proc = subprocess.run(
        cmd,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "ENGINE": engine},
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "image-smoke: passed" in proc.stdout
    assert proc.stdout.count("image-smoke: ok") >= 12
