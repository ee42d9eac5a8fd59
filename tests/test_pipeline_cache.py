"""Caching keyed on content, under kfp.local's cache (which, like KFP's, keys on input artifact identity).

The data steps wired as in pipeline.py (content-hash -> fetch-data -> validate): a rerun on unchanged
clips reuses fetch-data's and validate's cached outputs; an edited transcript changes the hash and both
run again; fetch-data refuses a hash that does not describe the files it fetched.
"""

import builtins
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _build_data_steps():
    from kfp import dsl

    import components as c

    @dsl.pipeline(name="data-cache")
    def data_cache(source: str, mirror_root: str):
        hashed = c.content_hash(source=source, mirror_root=mirror_root).set_caching_options(False)
        raw = c.fetch_data(source=source, content_hash=hashed.output, mirror_root=mirror_root)
        c.validate(data=raw.outputs["data"], content_hash=hashed.output, max_clip_seconds=190.0)

    return data_cache


def _run(pipeline_func, root: Path, **arguments) -> Path:
    """Run once; return the new run folder (tasks served from the cache leave no folder there)."""
    before = set(root.iterdir()) if root.exists() else set()
    real_print = builtins.print  # kfp.local may leave its indenting print() behind
    try:
        pipeline_func(**arguments)
    finally:
        builtins.print = real_print
    (run,) = set(root.iterdir()) - before - {root / ".kfp_cache"}
    return run


def _hash(run: Path) -> str:
    return json.loads((run / "content-hash" / "executor_output.json").read_text())["parameterValues"][
        "Output"
    ]


def test_rerun_on_unchanged_clips_hits_the_cache_and_changes_do_not(tmp_path, demo_voice):
    from kfp import local

    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    clips = tmp_path / "clips"
    shutil.copytree(demo_voice, clips)
    root = tmp_path / "pipeline-root"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        enable_caching=True,
        cache_root=str(tmp_path / "cache"),
    )
    pipeline_func = _build_data_steps()
    args = {"source": str(clips), "mirror_root": str(tmp_path / "mirror")}

    first = _run(pipeline_func, root, **args)
    assert {p.name for p in first.iterdir()} >= {"content-hash", "fetch-data", "validate"}

    second = _run(pipeline_func, root, **args)
    assert _hash(second) == _hash(first)
    ran = {p.name for p in second.iterdir()}
    assert "content-hash" in ran  # never cached: it is what looks at the clips
    assert "fetch-data" not in ran and "validate" not in ran, f"expected cache hits, ran {ran}"

    lab = next(clips.rglob("*.lab"))
    lab.write_text(lab.read_text() + " (edited)")
    third = _run(pipeline_func, root, **args)
    assert _hash(third) != _hash(first)
    assert {p.name for p in third.iterdir()} >= {"fetch-data", "validate"}
    fetched = next((third / "fetch-data" / "data").rglob(lab.name))
    assert fetched.read_text().endswith(" (edited)")


def test_fetch_data_refuses_a_stale_hash(tmp_path, demo_voice):
    from kfp import local

    import components as c

    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    clips = tmp_path / "clips"
    shutil.copytree(demo_voice / "anna", clips / "anna")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    digest = c.content_hash(source=str(clips), mirror_root="").output
    assert len(digest) == 64
    with pytest.raises(RuntimeError):
        c.fetch_data(source=str(clips), content_hash="0" * 64, mirror_root="")
    task = c.fetch_data(source=str(clips), content_hash=digest, mirror_root="")
    assert task.outputs["data"].metadata["content_hash"] == digest
