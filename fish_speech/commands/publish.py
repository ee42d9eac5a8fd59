"""`fish-speech publish DIR DEST`: upload a model folder (e.g. the merged model) to gs://, s3://, hf://."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "Upload a folder (e.g. the merged model) to gs://BUCKET/PREFIX, s3://BUCKET/PREFIX, hf://ORG/NAME or a folder."
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", type=Path, help="folder to upload")
    p.add_argument(
        "destination", help="gs://BUCKET/PREFIX, s3://BUCKET/PREFIX, hf://ORG/NAME[@BRANCH] or a folder"
    )
    p.add_argument("--message", "-m", default="Upload fine-tuned model", help="commit message (hf:// only)")
    p.add_argument("--public", action="store_true", help="create the hf:// repo public (default: private)")
    p.add_argument("--jobs", type=int, default=8, help="parallel uploads (default 8)")


def run(args: argparse.Namespace) -> int:
    from fish_speech.storage.publish import publish_dir
    from fish_speech.storage.uri import parse_uri

    result = publish_dir(
        args.directory,
        parse_uri(args.destination),
        message=args.message,
        jobs=args.jobs,
        private=not args.public,
    )
    log.info(
        "published %s to %s: %d uploaded, %d already there",
        args.directory,
        result["destination"],
        result["uploaded"],
        result["skipped"],
    )
    print(result.get("commit") or result["destination"])
    return 0
