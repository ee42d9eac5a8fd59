"""Mirror a bucket prefix or local folder into a local folder, reusing verified files from earlier runs."""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fish_speech import fileio
from fish_speech.errors import UserError
from fish_speech.storage.base import ObjectStore, RemoteObject
from fish_speech.storage.manifest import (
    build_manifest,
    content_hash,
    hash_file,
    read_manifest,
    read_state,
    write_manifest,
    write_state,
)
from fish_speech.storage.transfer import download_all, list_objects, plan_downloads
from fish_speech.storage.uri import STORES, StorageURI

log = logging.getLogger(__name__)


@dataclass
class FetchResult:
    """What a fetch left in `out_dir`: its manifest entries and how many files were (re)used."""

    out_dir: Path
    entries: dict[str, str]
    downloaded: int
    reused: int
    removed: int

    @property
    def content_hash(self) -> str:
        return content_hash(self.entries)


def open_store(uri: StorageURI, jobs: int = 8) -> ObjectStore:
    """The backend for a location whose scheme is in `STORES` (gs://, s3://) or a local folder."""
    if uri.scheme == "local":
        from fish_speech.storage.local import LocalStore

        return LocalStore(uri.path)
    target = STORES.get(uri.scheme)
    if target is None:
        raise UserError(f"{uri}: not an object store or folder")
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)(uri, jobs)


@contextlib.contextmanager
def folder_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` so two fetches into it (e.g. a retried pod and its
    predecessor) never append to the same partial file. Best effort where flock is unsupported."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".tmp-fetch.lock", "a+b") as f:
        try:
            import fcntl

            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("%s: another fetch is writing here; waiting for it", out_dir)
                fcntl.flock(f, fcntl.LOCK_EX)
        except (ImportError, OSError) as e:  # no fcntl (Windows) or a filesystem without locks
            log.debug("%s: not locked (%s)", out_dir, e)
        yield


def check_separate(uri: StorageURI, out_dir: str | Path) -> None:
    """UserError when a local source and the output folder are the same or one contains the other."""
    if uri.scheme == "local":
        fileio.check_separate(uri.path, out_dir)


def filter_objects(objects: list[RemoteObject], patterns: list[str] | None) -> list[RemoteObject]:
    """Objects whose relative key matches any of the glob `patterns` (all when None)."""
    if not patterns:
        return objects
    return [o for o in objects if any(fnmatch.fnmatchcase(o.rel, p) for p in patterns)]


def _reusable(
    dest: Path, obj: RemoteObject, recorded_sha: str | None, recorded_version: str | None
) -> str | None:
    """sha256 of `dest` if it can stand for `obj` (same size, same checksum or object version, unchanged
    since the manifest recorded it); None if it must be downloaded again."""
    if not dest.is_file() or dest.stat().st_size != obj.size:
        return None
    if obj.checksum is None and obj.version and recorded_version and obj.version != recorded_version:
        log.info("%s: the source object was rewritten; downloading again", dest)
        return None
    algos = (
        ("sha256",) if obj.checksum is None or obj.checksum[0] == "sha256" else ("sha256", obj.checksum[0])
    )
    digests = hash_file(dest, algos)
    if recorded_sha is not None and digests["sha256"] != recorded_sha:
        log.warning(
            "%s: sha256 does not match %s (changed since it was fetched); downloading again",
            dest,
            "MANIFEST.sha256",
        )
        return None
    if obj.checksum is not None and digests[obj.checksum[0]] != obj.checksum[1]:
        log.info("%s: differs from the source; downloading again", dest)
        return None
    return digests["sha256"]


def finish_fetch(
    out_dir: Path, entries: dict[str, str], previous: dict[str, str], state: dict, source: str
) -> int:
    """The end of every fetch (object stores and hf://): remove the files the previous fetch wrote that
    the source no longer has, then write `MANIFEST.sha256` of `entries` and the fetch state. Returns
    how many files were removed."""
    removed = 0
    for rel in sorted(set(previous) - set(entries)):
        path = out_dir / rel
        if path.is_file():
            log.info("%s: no longer in %s; removing", path, source)
            path.unlink()
            removed += 1
    write_manifest(out_dir, entries)
    write_state(out_dir, state)
    return removed


def fetch_tree(
    store: ObjectStore,
    out_dir: str | Path,
    *,
    source: str,
    allow_patterns: list[str] | None = None,
    jobs: int = 8,
) -> FetchResult:
    """Make `out_dir` hold exactly the objects under the store's prefix (those matching
    `allow_patterns`), then write `MANIFEST.sha256` and the fetch state.

    Files already there are kept when they match the source's size and checksum and the manifest of the
    previous fetch; files that previous fetch wrote but the source no longer has are removed. Files the
    user put there themselves are left alone. Unsafe keys (`..`, absolute) fail before any download.
    """
    out_dir = Path(out_dir)
    objects = filter_objects(list_objects(store), allow_patterns)
    if not objects:
        raise UserError(f"{store.describe()}: no objects match {allow_patterns}")
    plan = plan_downloads(objects, out_dir)
    seen: dict[Path, str] = {}
    for obj, dest in plan:
        if dest in seen:
            raise UserError(
                f"{store.describe()}: keys {seen[dest]!r} and {obj.key!r} map to the same file {dest}"
            )
        seen[dest] = obj.key
    with folder_lock(out_dir):
        try:
            previous = read_manifest(out_dir) or {}
        except UserError as e:
            log.warning("%s; ignoring it", e)
            previous = {}
        state = read_state(out_dir)
        versions = state.get("versions", {}) if state.get("source") == source else {}

        def check(item: tuple[RemoteObject, Path]) -> str | None:
            obj, dest = item
            rel = dest.relative_to(out_dir).as_posix()
            return _reusable(dest, obj, previous.get(rel), versions.get(rel))

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            reuse = list(pool.map(check, plan))
        todo = [item for item, sha in zip(plan, reuse, strict=True) if sha is None]
        log.info(
            "%s: %d files, %d up to date, %d to download",
            store.describe(),
            len(plan),
            len(plan) - len(todo),
            len(todo),
        )
        download_all(store, todo, jobs)

        entries = {
            dest.relative_to(out_dir).as_posix(): sha
            for (_, dest), sha in zip(plan, reuse, strict=True)
            if sha
        }
        fresh = [dest.relative_to(out_dir).as_posix() for _, dest in todo]
        entries.update(build_manifest(out_dir, fresh, jobs))
        versions = {dest.relative_to(out_dir).as_posix(): obj.version for obj, dest in plan if obj.version}
        state = {"source": source, "versions": versions} if versions else {"source": source}
        removed = finish_fetch(out_dir, entries, previous, state, store.describe())
    return FetchResult(out_dir, entries, downloaded=len(todo), reused=len(plan) - len(todo), removed=removed)
