"""Fetch a base-model folder from any source (hf://, gs://, s3://, a folder, or `tiny`) and check it."""

from __future__ import annotations

import logging
from pathlib import Path

from fish_speech.base_model.check import CheckpointReport, check_checkpoint_dir
from fish_speech.storage.fetch import FetchResult

log = logging.getLogger(__name__)


def fetch_weights(
    source: str,
    output: Path,
    *,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    jobs: int = 8,
    seed: int = 0,
    check: bool = True,
) -> tuple[FetchResult, CheckpointReport | None]:
    """Fetch `source` into `output` (reusing a verified earlier fetch) and check it. Returns the
    FetchResult and the CheckpointReport (None without `check`)."""
    from fish_speech.storage.fetch import check_separate, fetch_tree, open_store
    from fish_speech.storage.manifest import (
        build_manifest,
        read_manifest,
        read_state,
        verify_manifest,
        write_manifest,
        write_state,
    )
    from fish_speech.storage.uri import parse_uri

    uri = parse_uri(source, revision)
    output = Path(output)
    if uri.scheme == "tiny":
        source_id = f"tiny:seed={seed}"
        previous = read_manifest(output) if output.is_dir() else None
        if (
            previous
            and read_state(output).get("source") == source_id
            and not verify_manifest(output, previous, jobs)
        ):
            log.info("%s: verified earlier tiny checkpoint (seed %d), reusing it", output, seed)
            result = FetchResult(output, previous, downloaded=0, reused=len(previous), removed=0)
        else:
            from fish_speech.base_model.tiny import write_tiny_checkpoint

            write_tiny_checkpoint(output, seed=seed)
            entries = build_manifest(output, jobs=jobs)
            write_manifest(output, entries)
            write_state(output, {"source": source_id})
            result = FetchResult(output, entries, downloaded=len(entries), reused=0, removed=0)
    elif uri.scheme == "hf":
        from fish_speech.storage.hf import fetch_hf

        result = fetch_hf(uri, output, allow_patterns=allow_patterns, jobs=jobs)
    else:
        check_separate(uri, output)
        result = fetch_tree(
            open_store(uri, jobs), output, source=uri.ident, allow_patterns=allow_patterns, jobs=jobs
        )
    # The files were just hashed for the manifest: no need to hash them again in the check.
    report = check_checkpoint_dir(output, verify=False, jobs=jobs) if check else None
    return result, report
