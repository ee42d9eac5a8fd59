"""Every output gets the mode a plain `open()` gives (0666 less the umask), not mkstemp's 0600."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield 0o644
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_protos_shards_get_the_default_mode(tmp_path, umask_022):
    from fish_speech.dataset.protos import write_protos
    from fish_speech.dataset.text_data_pb2 import TextData

    shards = write_protos(
        [TextData(source="a"), TextData(source="b")], tmp_path / "protos", shard_size_mb=1e-6
    )
    assert len(shards) == 2
    assert [_mode(p) for p in shards] == [umask_022, umask_022]


def test_compiled_yaml_gets_the_default_mode(tmp_path, umask_022):
    sys.path.insert(0, str(REPO))
    import pipeline

    out = pipeline.compile_pipeline(tmp_path / "p.yaml")
    assert _mode(out) == umask_022
    assert not list(tmp_path.glob(".tmp-*"))


def test_atomic_helpers_follow_the_umask(tmp_path):
    from fish_speech.fileio import atomic_path, atomic_write_text, temp_path_for

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"y")
        staged = temp_path_for(tmp_path / "c.protos")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.bin") == _mode(staged) == 0o640


def test_no_other_module_creates_files_with_mkstemp():
    """Outputs go through fish_speech.fileio (the normalize write probe is deleted at once)."""
    offenders = []
    for path in [
        REPO / "pipeline.py",
        REPO / "pipeline_cli.py",
        *(REPO / "fish_speech").rglob("*.py"),
        *(REPO / "components").rglob("*.py"),
    ]:
        if path.name == "fileio.py":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(r"\bmkstemp\(", line) and ".tmp-probe." not in line:
                offenders.append(f"{path.relative_to(REPO)}:{n}")
    assert offenders == []
