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


def run(args: argparse.Namespace) -> int:
    from fish_speech.base_model.fetch import fetch_weights

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
