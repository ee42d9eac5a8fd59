"""gs://BUCKET/PREFIX through google-cloud-storage with application default credentials
(Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS` pointing at a key file, or gcloud's login).
`GOOGLE_CLOUD_PROJECT` sets the billing project; `STORAGE_EMULATOR_HOST` points at an emulator."""

from __future__ import annotations

import base64
import logging
import os
import threading
from collections.abc import Callable
from typing import BinaryIO

from fish_speech.errors import UserError
from fish_speech.storage.base import RemoteObject, TransientError
from fish_speech.storage.transfer import call_translated
from fish_speech.storage.uri import StorageURI

log = logging.getLogger(__name__)


def md5_hex_from_base64(b64: str | None) -> str | None:
    """GCS reports md5 as base64; the transfer engine compares hex digests."""
    return base64.b64decode(b64).hex() if b64 else None


class _Counting:
    """File-like wrapper that reports every write to a progress callback."""

    def __init__(self, out: BinaryIO, progress: Callable[[int], None]) -> None:
        self.out, self.progress = out, progress

    def write(self, data: bytes) -> int:
        n = self.out.write(data)
        self.progress(len(data))
        return n


class GCSStore:
    """A GCS bucket prefix; one client per thread (the client is not documented as thread-safe)."""

    def __init__(self, uri: StorageURI, jobs: int = 8) -> None:
        self.uri = uri
        self._local = threading.local()
        key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if key_file and not os.path.isfile(key_file):
            # The pipeline points this at an optional secret's mount; without the secret, fall back to the
            # pod's own identity (Workload Identity / metadata server) instead of failing on a missing file.
            log.info(
                "GOOGLE_APPLICATION_CREDENTIALS file %s does not exist; using the default credentials",
                key_file,
            )
            os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS")

    def describe(self) -> str:
        return str(self.uri)

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import google.auth.exceptions
            from google.cloud import storage

            project = os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT") or None
            try:
                client = storage.Client(project=project)
            except google.auth.exceptions.DefaultCredentialsError as e:
                raise UserError(
                    f"{self.describe()}: no Google Cloud credentials found; use Workload Identity or set "
                    "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (from a Kubernetes secret)"
                ) from e
            self._local.client = client
        return client

    def _translate(self, e: Exception, what: str) -> Exception:
        """Map a client exception to UserError (not worth retrying) or TransientError."""
        import google.api_core.exceptions as gexc
        import google.auth.exceptions
        import requests

        if isinstance(e, gexc.NotFound):
            return UserError(f"{what}: not found (does bucket {self.uri.name!r} exist?)")
        if isinstance(e, gexc.Forbidden | gexc.Unauthorized | google.auth.exceptions.RefreshError):
            return UserError(
                f"{what}: access denied ({type(e).__name__}); check the service account's roles "
                "(roles/storage.objectViewer to read, objectAdmin to publish) and GOOGLE_APPLICATION_CREDENTIALS"
            )
        transient = (
            gexc.ServerError,
            gexc.TooManyRequests,
            requests.exceptions.RequestException,
            google.auth.exceptions.TransportError,
            ConnectionError,
            TimeoutError,
        )
        return TransientError(f"{type(e).__name__}: {e}") if isinstance(e, transient) else e

    def _call(self, fn: Callable[[], object], what: str):
        return call_translated(fn, what, self._translate)

    def list(self) -> list[RemoteObject]:
        def listing() -> list[RemoteObject]:
            out = []
            for b in self._client().list_blobs(self.uri.name, prefix=self.uri.prefix or None):
                if b.name.endswith("/"):
                    continue  # folder placeholder objects
                md5 = md5_hex_from_base64(b.md5_hash)  # composite objects have none
                out.append(
                    RemoteObject(
                        b.name,
                        b.name[len(self.uri.prefix) :],
                        int(b.size),
                        ("md5", md5) if md5 else None,
                        str(b.generation) if b.generation else None,
                    )
                )
            return out

        return self._call(listing, self.describe())

    def download(
        self, obj: RemoteObject, out: BinaryIO, offset: int, progress: Callable[[int], None]
    ) -> None:
        blob = self._client().bucket(self.uri.name).blob(obj.key)
        # Ranged reads cannot be checked by the client: the transfer engine checks the whole file's md5.
        self._call(
            lambda: blob.download_to_file(_Counting(out, progress), start=offset or None, checksum=None),
            f"gs://{self.uri.name}/{obj.key}",
        )

    def upload(self, path: os.PathLike, rel: str) -> None:
        key = self.uri.key(rel)
        blob = self._client().bucket(self.uri.name).blob(key)
        self._call(lambda: blob.upload_from_filename(os.fspath(path)), f"gs://{self.uri.name}/{key}")
