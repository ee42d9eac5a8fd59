"""Join an untrusted relative path (an object key) onto a target directory without escaping it."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from fish_speech.errors import UserError


def safe_relpath(rel: str, what: str = "object key") -> str:
    """Return `rel` normalised to a relative posix path, or raise UserError if it could escape.

    Rejected: empty names, absolute paths (`/x`, `C:\\x`), any `..` segment, backslashes and NUL.
    `.` and empty segments are dropped (`a/./b`, `a//b` -> `a/b`) except a leading `/`, which is absolute.
    """
    if not rel or "\x00" in rel or "\\" in rel:
        raise UserError(f"{what} {rel!r}: not a safe relative path")
    if rel.startswith("/") or (len(rel) > 1 and rel[1] == ":"):
        raise UserError(f"{what} {rel!r}: absolute path, refusing to write outside the target directory")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UserError(f"{what} {rel!r}: contains '..', refusing to write outside the target directory")
    return str(PurePosixPath(*parts))


def safe_join(root: str | os.PathLike, rel: str, what: str = "object key") -> Path:
    """`root / rel`, guaranteed to lie inside `root` (symlinks included), else UserError."""
    root = Path(root)
    dest = root.joinpath(*safe_relpath(rel, what).split("/"))
    # A symlinked folder inside root could still point elsewhere: check the resolved location too.
    real_root = root.resolve()
    if not dest.resolve().is_relative_to(real_root):
        raise UserError(f"{what} {rel!r}: resolves outside {root}, refusing to write there")
    return dest
