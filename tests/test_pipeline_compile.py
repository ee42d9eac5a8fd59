"""Compile and submit traps: the placeholder registry, --param with --compile, descriptions, --help, a dead host."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _pipeline(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("IMAGE_REGISTRY", "IMAGE_TAG")}
    return subprocess.run(
        [sys.executable, str(REPO / "pipeline.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**base, **(env or {})},
    )


def _spec(path: Path) -> dict:
    return next(yaml.safe_load_all(path.read_text()))


def test_compile_refuses_the_placeholder_registry(tmp_path, monkeypatch):
    import pipeline
    import pipeline_cli
    from components import images

    monkeypatch.delenv("IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("IMAGE_TAG", raising=False)
    out = tmp_path / "p.yaml"
    with pytest.raises(SystemExit, match=r"placeholder registry .*--registry"):
        pipeline.main(["--compile", "--output", str(out)])
    assert not out.exists()
    # once images/build.py push has recorded digests for those references, they are real images
    config = json.loads(images.IMAGES_JSON.read_text())
    config["digests"] = {
        f"{config['registry']}/{config['images'][k]['name']}:{config['tag']}": "sha256:" + "c" * 64
        for k in ("cpu", "gpu")
    }
    pushed = tmp_path / "images.json"
    pushed.write_text(json.dumps(config))
    monkeypatch.setattr(images, "IMAGES_JSON", pushed)
    pipeline_cli.check_images()  # no SystemExit


def test_compile_param_sets_the_defaults_and_every_parameter_has_a_description(tmp_path):
    out = tmp_path / "p.yaml"
    proc = _pipeline("--compile", "--output", str(out), "--registry", "r.example/x", "--param", "max_steps=3")
    assert proc.returncode == 0, proc.stderr
    assert "max_steps=3" in proc.stdout
    params = _spec(out)["root"]["inputDefinitions"]["parameters"]
    assert params["max_steps"]["defaultValue"] == 3
    assert params["batch_size"]["defaultValue"] == 4  # the others keep theirs
    missing = [name for name, p in params.items() if not p.get("description")]
    assert missing == []
    assert "LUFS" in params["loudness"]["description"]


def test_help_lists_every_parameter():
    import pipeline

    proc = _pipeline("--help")
    assert proc.returncode == 0
    for name in pipeline.pipeline_parameters():
        assert f"\n  {name} [" in proc.stdout, name
    assert "max_steps [1000]: Optimizer steps" in proc.stdout


def test_submit_to_a_dead_host_is_one_line():
    proc = _pipeline("--submit", "--host", "http://127.0.0.1:9", "--registry", "r.example/x")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pipeline.py: the KFP API at http://127.0.0.1:9 did not take the request:")
    assert "Connection refused" in lines[0]
