"""Parallel, resumable, verified transfers between an ObjectStore and a local folder.

Downloads go to `.tmp-<name>.part` beside the final file (skipped by every discovery), resume from the
bytes already there after a network error or an interrupted run, are checked against the size and the
store's checksum, and are renamed to the final name only when complete.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from fish_speech.errors import UserError
from fish_speech.storage.base import EmptyPrefixError, ObjectStore, RemoteObject, TransientError
from fish_speech.storage.manifest import hash_file
from fish_speech.storage.safepath import safe_join

log = logging.getLogger(__name__)
T = TypeVar("T")

# Back-off between retries: BASE_DELAY * 2**attempt (capped, with jitter). Tests lower these.
ATTEMPTS = 6
BASE_DELAY = 1.0
MAX_DELAY = 30.0


class ChecksumError(TransientError):
    """A completed download does not match the store's size or checksum."""


def list_objects(store: ObjectStore) -> list[RemoteObject]:
    """`store.list()` with retries; an empty prefix is an `EmptyPrefixError` naming the location.

    The one way the engine lists a store: backends list once and leave retries and this check to it.
    """
    objects = retry(store.list, f"list {store.describe()}")
    if not objects:
        raise EmptyPrefixError(
            f"{store.describe()}: no objects under this prefix (wrong bucket path or prefix?)"
        )
    return objects


def call_translated(fn: Callable[[], T], what: str, translate: Callable[[Exception, str], Exception]) -> T:
    """Call `fn`; an exception that `translate(e, what)` maps to another one (UserError: not worth
    retrying, TransientError: worth it) is raised as that one, chained. Each backend has a `translate`."""
    try:
        return fn()
    except Exception as e:
        translated = translate(e, what)
        if translated is e:
            raise
        raise translated from e


def retry(fn: Callable[[], T], what: str, attempts: int | None = None, base_delay: float | None = None) -> T:
    """Call `fn`, retrying TransientError with exponential back-off; the last failure becomes a UserError."""
    attempts = ATTEMPTS if attempts is None else attempts
    base_delay = BASE_DELAY if base_delay is None else base_delay
    for attempt in range(attempts):
        try:
            return fn()
        except TransientError as e:
            if attempt == attempts - 1:
                raise UserError(f"{what}: giving up after {attempts} attempts: {e}") from e
            delay = min(MAX_DELAY, base_delay * 2**attempt) * (0.5 + random.random() / 2)
            log.warning(
                "%s: %s; retrying in %.1f s (attempt %d of %d)", what, e, delay, attempt + 2, attempts
            )
            time.sleep(delay)
    raise AssertionError("unreachable")


def part_path(dest: Path) -> Path:
    """Where the partial download of `dest` lives (a temp name: discovery skips it)."""
    return dest.with_name(f".tmp-{dest.name}.part")


def download_one(store: ObjectStore, obj: RemoteObject, dest: Path, progress: Callable[[int], None]) -> None:
    """Download `obj` to `dest`: resume any partial file, retry network errors, verify, rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    what = f"{store.describe()}{obj.rel}"

    def attempt_once(report: Callable[[int], None]) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > obj.size:  # the object shrank since the partial download: start over
            part.unlink()
            offset = 0
        if offset:
            log.info("%s: resuming at byte %d of %d", what, offset, obj.size)
            report(offset)
        with open(part, "ab") as out:
            try:
                if offset < obj.size:
                    store.download(obj, out, offset, report)
            finally:
                out.flush()
                os.fsync(out.fileno())
        size = part.stat().st_size
        if size != obj.size:
            raise TransientError(f"got {size} of {obj.size} bytes")
        if obj.checksum is not None:
            algo, digest = obj.checksum
            got = hash_file(part, (algo,))[algo]
            if got != digest:
                part.unlink()  # a corrupt file cannot be resumed: start again from byte 0
                raise ChecksumError(f"{algo} checksum mismatch (expected {digest}, got {got})")

    def attempt() -> None:
        done = 0

        def report(n: int) -> None:
            nonlocal done
            done += n
            progress(n)

        try:
            attempt_once(report)
        except TransientError:
            progress(-done)  # the retry reports the bytes it resumes from again
            raise

    retry(attempt, what)
    os.replace(part, dest)


def _progress_bar(total: int, desc: str) -> tqdm:
    # In a pod log (no tty) a bar that redraws every 0.1 s floods the log: update rarely there.
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        mininterval=0.5 if sys.stderr.isatty() else 15.0,
        file=sys.stderr,
    )


def plan_downloads(objects: list[RemoteObject], out_dir: Path) -> list[tuple[RemoteObject, Path]]:
    """Pair every object with its safe destination; UserError (before any download) for unsafe keys."""
    return [(obj, safe_join(out_dir, obj.rel)) for obj in objects]


def download_all(store: ObjectStore, todo: list[tuple[RemoteObject, Path]], jobs: int = 8) -> None:
    """Download `todo` in parallel with one byte-progress bar; the first hard failure is raised."""
    if not todo:
        return
    lock = threading.Lock()
    with _progress_bar(sum(obj.size for obj, _ in todo), f"download {store.describe()}") as bar:

        def progress(n: int) -> None:
            with lock:
                bar.update(n)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [pool.submit(download_one, store, obj, dest, progress) for obj, dest in todo]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)  # fail fast: the partial files stay resumable
                raise


def upload_all(store: ObjectStore, root: Path, files: list[str], jobs: int = 8) -> None:
    """Upload `root/rel` for every rel in `files`, in parallel, with retries and a byte-progress bar."""
    if not files:
        return
    lock = threading.Lock()
    with _progress_bar(
        sum((root / rel).stat().st_size for rel in files), f"upload {store.describe()}"
    ) as bar:

        def one(rel: str) -> None:
            retry(lambda: store.upload(root / rel, rel), f"{store.describe()}{rel}")
            with lock:
                bar.update((root / rel).stat().st_size)

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [pool.submit(one, rel) for rel in files]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                pool.shutdown(cancel_futures=True)
                raise
