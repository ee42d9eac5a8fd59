"""`fish-speech fetch-data SOURCE --output DIR`: a raw-data folder from a bucket, with a content hash."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = (
    "Mirror a raw-data folder (SPEAKER/clip.{wav,mp3,flac} + clip.lab) from gs://, s3:// or a local folder, "
    "write MANIFEST.sha256 and print the content hash (a cache key: unchanged clips, same hash)."
)
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="gs://BUCKET/PREFIX, s3://BUCKET/PREFIX or a local folder")
    p.add_argument("--output", required=True, type=Path, help="local folder to mirror into")
    p.add_argument("--hash-file", type=Path, help="also write the content hash to this file")
    p.add_argument("--allow-patterns", nargs="+", metavar="GLOB", help="fetch only keys matching these globs")
    p.add_argument("--jobs", type=int, default=8, help="parallel transfers (default 8)")


def fetch_data(source: str, output: Path, *, allow_patterns: list[str] | None = None, jobs: int = 8):
    """Mirror `source` into `output`; returns the FetchResult (its `content_hash` is the cache key)."""
    from fish_speech.errors import UserError
    from fish_speech.storage.fetch import check_separate, fetch_tree, open_store
    from fish_speech.storage.uri import STORES, parse_uri

    uri = parse_uri(source)
    if uri.scheme != "local" and uri.scheme not in STORES:
        raise UserError(
            f"{source}: fetch-data reads {', '.join(f'{s}://' for s in STORES)} or a local folder"
        )
    check_separate(uri, output)
    result = fetch_tree(
        open_store(uri, jobs), output, source=uri.ident, allow_patterns=allow_patterns, jobs=jobs
    )
    _log_summary(result.entries)
    return result


def _log_summary(entries: dict[str, str]) -> None:
    """Speakers, clips and transcripts fetched (the validate step reports per-clip problems)."""
    from fish_speech.audio import AUDIO_EXTENSIONS

    stems = {rel.rsplit(".", 1)[0] for rel in entries if rel.lower().endswith(tuple(AUDIO_EXTENSIONS))}
    labs = {rel.rsplit(".", 1)[0] for rel in entries if rel.endswith(".lab")}
    speakers = {rel.split("/")[0] for rel in stems if "/" in rel}
    log.info("%d speakers, %d clips, %d with a .lab transcript", len(speakers), len(stems), len(stems & labs))
    if stems - labs:
        log.warning("%d clips have no .lab transcript (validate will skip them)", len(stems - labs))


def run(args: argparse.Namespace) -> int:
    from fish_speech.fileio import atomic_write_text

    result = fetch_data(args.source, args.output, allow_patterns=args.allow_patterns, jobs=args.jobs)
    log.info(
        "%s: %d files (%d fetched, %d reused, %d removed)",
        args.output,
        len(result.entries),
        result.downloaded,
        result.reused,
        result.removed,
    )
    if args.hash_file:
        atomic_write_text(args.hash_file, result.content_hash + "\n")
    print(result.content_hash)
    return 0
