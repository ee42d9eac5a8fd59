"""`MANIFEST.sha256` (the `sha256sum` format: `<hex>  <relative path>`, sorted) and the content hash.

The content hash of a folder is the sha256 of its manifest text, i.e. of the sorted list of
(relative path, file sha256) pairs: it changes exactly when a file is added, removed, renamed or edited,
so the pipeline can use it as a cache key.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_write_text, is_temp_file, sha256_file
from fish_speech.layout import MANIFEST_FILE

log = logging.getLogger(__name__)

MANIFEST_NAME = MANIFEST_FILE
STATE_NAME = ".fetch.json"  # where a fetch came from (not part of the content)
_EXCLUDED = {MANIFEST_NAME, STATE_NAME}
_CHUNK = 4 << 20


def hash_file(path: str | os.PathLike, algorithms: tuple[str, ...] = ("sha256",)) -> dict[str, str]:
    """Hex digests of one file for each algorithm, in one read pass."""
    hashes = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return {a: h.hexdigest() for a, h in hashes.items()}


def list_files(root: str | os.PathLike) -> list[str]:
    """Relative posix paths of every regular file under `root`, sorted; skips temporary files and
    the manifest / fetch-state files themselves."""
    root = Path(root)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not is_temp_file(d))
        for name in filenames:
            if is_temp_file(name):
                continue
            rel = Path(dirpath, name).relative_to(root).as_posix()
            if rel not in _EXCLUDED:
                out.append(rel)
    return sorted(out)


def build_manifest(root: str | os.PathLike, files: list[str] | None = None, jobs: int = 4) -> dict[str, str]:
    """{relative path: sha256} for `files` (default: every file under `root`), hashed in parallel."""
    root = Path(root)
    files = list_files(root) if files is None else sorted(files)
    with ThreadPoolExecutor(max(1, jobs)) as pool:  # hashlib releases the GIL on large buffers
        digests = list(pool.map(lambda rel: sha256_file(root / rel), files))
    return dict(zip(files, digests, strict=True))


def format_manifest(entries: dict[str, str]) -> str:
    """The manifest text: one `<sha256>  <path>` line per file, sorted by path."""
    return "".join(f"{entries[rel]}  {rel}\n" for rel in sorted(entries))


def content_hash(entries: dict[str, str]) -> str:
    """sha256 of the manifest text: a stable hash of the folder's content."""
    return hashlib.sha256(format_manifest(entries).encode("utf-8")).hexdigest()


def write_manifest(root: str | os.PathLike, entries: dict[str, str]) -> Path:
    """Write `root/MANIFEST.sha256` atomically; returns its path."""
    path = Path(root) / MANIFEST_NAME
    atomic_write_text(path, format_manifest(entries))
    return path


def read_manifest(root: str | os.PathLike) -> dict[str, str] | None:
    """The entries of `root/MANIFEST.sha256`, or None if there is none. UserError if it is malformed."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return None
    entries = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or not rel:
            raise UserError(f"{path}:{n}: not a '<sha256>  <path>' line")
        entries[rel] = digest
    return entries


def verify_manifest(root: str | os.PathLike, entries: dict[str, str], jobs: int = 4) -> list[str]:
    """Problems found checking `root` against `entries` (missing or changed files); [] if all match."""
    root = Path(root)
    missing = [rel for rel in entries if not (root / rel).is_file()]
    present = [rel for rel in entries if rel not in missing]
    actual = build_manifest(root, present, jobs)
    problems = [f"{rel}: missing" for rel in missing]
    problems += [
        f"{rel}: sha256 mismatch (file changed since it was fetched)"
        for rel in present
        if actual[rel] != entries[rel]
    ]
    return sorted(problems)


def read_state(root: str | os.PathLike) -> dict:
    """What the last fetch into `root` recorded (source, commit); {} if nothing readable."""
    import json

    try:
        state = json.loads((Path(root) / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(root: str | os.PathLike, state: dict) -> None:
    """Record where the content of `root` came from (never credentials)."""
    import json

    atomic_write_text(Path(root) / STATE_NAME, json.dumps(state, indent=2, sort_keys=True) + "\n")
