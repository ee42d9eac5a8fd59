import os
import stat

import pytest

from fish_speech.fileio import atomic_path, atomic_write_text, is_temp_file


def test_atomic_write_replaces_and_uses_default_mode(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        assert is_temp_file(tmp)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
