"""Atomic file writes: write to a temporary name in the same folder, fsync, then rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it over `final`, else delete it.

    A killed process leaves at most a `.tmp-*` file, never a partial file under the final name.
    `suffix` keeps an extension on the temporary name for writers that pick the format by it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the mode a plain open() would (pipeline steps may run as other users)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(final: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `final` atomically."""
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | os.PathLike, text: str) -> None:
    """Write UTF-8 `text` to `final` atomically."""
    atomic_write_bytes(final, text.encode("utf-8"))


def is_temp_file(path: str | os.PathLike) -> bool:
    """True for the temporary files `atomic_path` creates (skipped by every discovery)."""
    return Path(path).name.startswith(".tmp-")
