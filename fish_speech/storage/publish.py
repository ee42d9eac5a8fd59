"""Upload a folder (the merged model) to gs://, s3://, hf:// or a local folder."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.storage.base import EmptyPrefixError
from fish_speech.storage.fetch import check_separate, open_store
from fish_speech.storage.manifest import MANIFEST_NAME, build_manifest, format_manifest, hash_file
from fish_speech.storage.transfer import list_objects, upload_all
from fish_speech.storage.uri import StorageURI

log = logging.getLogger(__name__)


def publish_dir(
    src_dir: str | Path, uri: StorageURI, *, message: str, jobs: int = 8, private: bool = True
) -> dict:
    """Upload every file of `src_dir` (not temporary files) and a `MANIFEST.sha256` of them to `uri`.
    `src_dir` is only read (it may be a read-only input artifact).

    Object stores: files already there with the same size and checksum are skipped (a rerun after an
    interruption uploads only what is missing) and the manifest goes last, so its presence means the
    upload is complete. hf://: one commit with `message`. Returns {"destination", "uploaded", "skipped",
    "content_hash"}.
    """
    from fish_speech.storage.manifest import content_hash

    src = Path(src_dir)
    if uri.scheme == "tiny":
        raise UserError("'tiny' is a source, not a destination")
    if not src.is_dir():
        raise UserError(f"{src}: no such directory")
    entries = build_manifest(src, jobs=jobs)
    if not entries:
        raise UserError(f"{src}: nothing to publish (empty directory)")
    manifest = format_manifest(entries)
    result = {"destination": str(uri), "content_hash": content_hash(entries)}
    if uri.scheme == "hf":
        from fish_speech.storage.hf import publish_hf

        result["commit"] = publish_hf(src, list(entries), manifest.encode(), uri, message, private=private)
        result.update(uploaded=len(entries) + 1, skipped=0)
        return result
    check_separate(uri, src)
    store = open_store(uri, jobs)
    try:
        existing = {o.rel: o for o in list_objects(store)}
    except EmptyPrefixError:
        existing = {}
    todo = []
    for rel in entries:
        obj = existing.get(rel)
        if obj is not None and obj.size == (src / rel).stat().st_size and obj.checksum is not None:
            algo, digest = obj.checksum
            if hash_file(src / rel, (algo,))[algo] == digest:
                continue
        todo.append(rel)
    skipped = len(entries) - len(todo)
    log.info("publish %s -> %s: %d files to upload, %d already there", src, uri, len(todo), skipped)
    upload_all(store, src, todo, jobs)
    with tempfile.TemporaryDirectory(prefix="fish-speech-publish-") as tmp:
        (Path(tmp) / MANIFEST_NAME).write_text(manifest, encoding="utf-8")
        upload_all(store, Path(tmp), [MANIFEST_NAME], 1)  # last: marks the upload complete
    result.update(uploaded=len(todo) + 1, skipped=skipped)
    return result
