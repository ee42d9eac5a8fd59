"""What every object-store backend (s3, gs, local) provides to the transfer engine."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from fish_speech.errors import UserError


@dataclass(frozen=True)
class RemoteObject:
    """One object under the source prefix. `rel` is its key relative to the prefix (not yet checked for
    safety); `checksum` is (algorithm, hex digest) when the store knows one, e.g. ("md5", ...);
    `version` changes whenever the object is rewritten (S3 ETag, GCS generation): it tells a rewritten
    object of the same size apart when there is no content checksum (multipart uploads)."""

    key: str
    rel: str
    size: int
    checksum: tuple[str, str] | None = None
    version: str | None = None


class TransientError(Exception):
    """A network-level failure worth retrying (connection reset, timeout, 5xx)."""


class ObjectStore(Protocol):
    """A bucket/prefix (or local folder) the transfer engine can list, read and write."""

    def describe(self) -> str:
        """The location as the user wrote it, for messages (never with credentials)."""
        ...

    def list(self) -> list[RemoteObject]:
        """Every object under the prefix, in one attempt; UserError if the bucket is missing or access is
        denied, TransientError for network trouble. The engine (`transfer.list_objects`) retries and
        turns an empty listing into an `EmptyPrefixError`: a backend does neither."""
        ...

    def download(
        self, obj: RemoteObject, out: BinaryIO, offset: int, progress: Callable[[int], None]
    ) -> None:
        """Write the bytes of `obj` from `offset` on to `out`, calling `progress(n)` per chunk.

        Raises TransientError for failures worth retrying, UserError for ones that are not."""
        ...

    def upload(self, path: os.PathLike, rel: str) -> None:
        """Store the local file `path` as `rel` under the prefix (overwriting)."""
        ...


class EmptyPrefixError(UserError):
    """The bucket exists but holds no objects under the prefix."""
