"""Parse the SOURCE / DEST arguments of fetch-weights, fetch-data and publish.

Accepted forms: `hf://ORG/NAME[@REV]`, `gs://BUCKET[/PREFIX]`, `s3://BUCKET[/PREFIX]`, `tiny`, or a local path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fish_speech.errors import UserError

# The object-store backends by scheme ("module:class", imported on first use: their clients are heavy).
# A new backend is a module with an `ObjectStore` class (storage/base.py) and one line here.
STORES = {
    "gs": "fish_speech.storage.gcs:GCSStore",
    "s3": "fish_speech.storage.s3:S3Store",
}
SCHEMES = ("hf", *STORES)
_HF_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Bucket names: S3 and GCS both allow lower-case letters, digits, '-', '.', and GCS also '_'.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")


@dataclass(frozen=True)
class StorageURI:
    """A parsed location: `name` is the bucket or Hugging Face repo id, `path` the local path."""

    scheme: str  # "hf" | "gs" | "s3" | "local" | "tiny"
    name: str = ""  # the bucket, or the Hugging Face repo id (ORG/NAME)
    prefix: str = ""  # object-key prefix without leading '/', '' or ending in '/'
    revision: str | None = None
    path: Path | None = None

    @property
    def ident(self) -> str:
        """A stable identity of the location (local paths made absolute), recorded with a fetch."""
        return str(self.path.resolve()) if self.scheme == "local" else str(self)

    def key(self, rel: str) -> str:
        """The object key of `rel` (a relative posix path) under this prefix."""
        return self.prefix + rel

    def __str__(self) -> str:
        if self.scheme == "local":
            return str(self.path)
        if self.scheme == "tiny":
            return "tiny"
        if self.scheme == "hf":
            return f"hf://{self.name}" + (f"@{self.revision}" if self.revision else "")
        return f"{self.scheme}://{self.name}/{self.prefix}"


def is_object_store(text: str) -> bool:
    """True for a URI of an object-store backend (`STORES`), e.g. gs://b/p or s3://b/p."""
    scheme, sep, _ = text.strip().partition("://")
    return bool(sep) and scheme.lower() in STORES


def parse_uri(text: str, revision: str | None = None) -> StorageURI:
    """Parse `text`; `revision` (from `--revision`) overrides an `@REV` suffix of an hf:// URI.

    Raises UserError for an unknown scheme or a malformed bucket / repo name.
    """
    text = text.strip()
    if text == "tiny":
        return StorageURI("tiny")
    if "://" not in text:
        return StorageURI("local", path=Path(text).expanduser())
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise UserError(
            f"{text}: unsupported scheme {scheme!r} (use hf://, gs://, s3://, 'tiny' or a local path)"
        )
    if scheme == "hf":
        repo, _, rev = rest.strip("/").partition("@")
        if not _HF_REPO.match(repo):
            raise UserError(
                f"{text}: expected hf://ORG/NAME[@REVISION], e.g. hf://fishaudio/openaudio-s1-mini"
            )
        return StorageURI("hf", name=repo, revision=revision or rev or None)
    if revision:
        raise UserError(f"{text}: --revision only applies to hf:// sources")
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UserError(f"{text}: {bucket!r} is not a valid bucket name")
    prefix = prefix.strip("/")
    return StorageURI(scheme, name=bucket, prefix=prefix + "/" if prefix else "")
