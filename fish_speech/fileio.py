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
    tmp_path = temp_path_for(final, suffix)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, default_file_mode())  # again: a writer may have replaced the file
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def temp_path_for(final: str | os.PathLike, suffix: str = "") -> Path:
    """A new empty `.tmp-*` file beside `final` (parents created) with the mode a plain `open()` gives.

    For writers that stage several files and rename them together (protos shards); everything else
    uses `atomic_path`. mkstemp alone creates 0600, which other users (pipeline steps running as
    another uid, a web server) cannot read.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    os.chmod(tmp, default_file_mode())
    return Path(tmp)


def default_file_mode() -> int:
    """0666 less the process umask: the mode `open(path, "w")` gives a new file."""
    return 0o666 & ~_umask()


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


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike) -> bool:
    """Put `src` at `dest`: a hard link when possible (no extra disk; checkpoints are GBs), else an atomic
    copy. Returns False when `dest` already was that very file."""
    import shutil

    src, dest = Path(src), Path(dest)
    if dest.is_file() and os.path.samefile(src, dest):
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".tmp-{dest.name}.link")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or links not allowed: copy instead
        with atomic_path(dest) as copy:
            shutil.copyfile(src, copy)
        return True
    os.replace(tmp, dest)
    return True


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of one file, read in 4 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_separate(src: str | os.PathLike, dest: str | os.PathLike, what: str = "output folder") -> None:
    """UserError when the folders `src` and `dest` are the same or one contains the other."""
    from fish_speech.errors import UserError

    a, b = Path(src).resolve(), Path(dest).resolve()
    if a == b:
        how = "is"
    elif b.is_relative_to(a):
        how = "is inside"
    elif a.is_relative_to(b):
        how = "contains"
    else:
        return
    raise UserError(
        f"{dest}: the {what} {how} the input folder {src} (they overlap); choose a separate folder"
    )
