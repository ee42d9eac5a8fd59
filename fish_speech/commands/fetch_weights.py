"""`fish-speech fetch-weights SOURCE --output DIR`: the base model, checked before any GPU time."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = (
    "Download the base model (hf://ORG/NAME[@REV], gs://, s3://, a local folder, or 'tiny' for a random tiny "
    "model), write MANIFEST.sha256 and check files, config and tensor shapes."
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="hf://fishaudio/openaudio-s1-mini[@REV], gs://BUCKET/PREFIX, s3://BUCKET/PREFIX, DIR or tiny",
    )
    p.add_argument("--output", required=True, type=Path, help="checkpoint directory to write")
    p.add_argument("--revision", help="branch, tag or commit (hf:// only; overrides @REV)")
    p.add_argument(
        "--allow-patterns", nargs="+", metavar="GLOB", help="fetch only files matching these globs"
    )
    p.add_argument("--jobs", type=int, default=8, help="parallel transfers (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the 'tiny' random model")
    p.add_argument(
        "--no-check", action="store_true", help="skip the checkpoint check (e.g. with --allow-patterns)"
    )


def fetch_weights(
    source: str,
    output: Path,
    *,
    revision: str | None = None,
    allow_patterns: list[str] | None = None,
    jobs: int = 8,
    seed: int = 0,
    check: bool = True,
):
    """Fetch `source` into `output` (reusing a verified earlier fetch) and check it. Returns the
    FetchResult and the CheckpointReport (None without `check`)."""
    from fish_speech.storage.fetch import FetchResult, check_separate, fetch_tree, open_store
    from fish_speech.storage.manifest import (
        build_manifest,
        read_manifest,
        read_state,
        verify_manifest,
        write_manifest,
        write_state,
    )
    from fish_speech.storage.uri import parse_uri
    from fish_speech.weights import check_checkpoint_dir

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
            from fish_speech.tiny import write_tiny_checkpoint

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


def run(args: argparse.Namespace) -> int:
    result, report = fetch_weights(
        args.source,
        args.output,
        revision=args.revision,
        allow_patterns=args.allow_patterns,
        jobs=args.jobs,
        seed=args.seed,
        check=not args.no_check,
    )
    log.info(
        "%s: %d files (%d fetched, %d reused), content hash %s",
        args.output,
        len(result.entries),
        result.downloaded,
        result.reused,
        result.content_hash,
    )
    if report is not None:
        print(report.summary())
    return 0
