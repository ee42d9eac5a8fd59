"""s3://BUCKET/PREFIX through the `minio` client: AWS S3, MinIO (Kubeflow's artifact store), and any
S3-compatible store.

Environment: `S3_ENDPOINT_URL` (e.g. `http://minio-service.kubeflow:9000`; also read: `AWS_ENDPOINT_URL_S3`,
`AWS_ENDPOINT_URL`; default `https://s3.amazonaws.com`), `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
optional `AWS_SESSION_TOKEN` and `AWS_REGION` / `AWS_DEFAULT_REGION`. Without keys the bucket is read
anonymously, or with IRSA web-identity credentials when `AWS_WEB_IDENTITY_TOKEN_FILE` is set.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import BinaryIO
from urllib.parse import urlsplit

from fish_speech.errors import UserError
from fish_speech.storage.base import RemoteObject, TransientError
from fish_speech.storage.transfer import call_translated
from fish_speech.storage.uri import StorageURI

log = logging.getLogger(__name__)

_MD5 = re.compile(r"^[0-9a-f]{32}$")
_CREDENTIAL_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
_MISSING_CODES = {"NoSuchBucket", "NoSuchKey"}
_CHUNK = 1 << 20


def endpoint_from_env() -> tuple[str, bool]:
    """(host[:port], use TLS) from S3_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
    url = (
        os.environ.get("S3_ENDPOINT_URL")
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or "https://s3.amazonaws.com"
    )
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise UserError(f"S3_ENDPOINT_URL={url!r}: expected http(s)://HOST[:PORT] with no path")
    return parts.netloc, parts.scheme == "https"


class S3Store:
    """An S3 bucket prefix (see module docstring for the environment it reads)."""

    def __init__(self, uri: StorageURI, jobs: int = 8) -> None:
        import urllib3
        from minio import Minio

        self.uri = uri
        netloc, secure = endpoint_from_env()
        self.endpoint = netloc
        credentials = None
        access_key = os.environ.get("AWS_ACCESS_KEY_ID") or None
        secret_key = os.environ.get("AWS_SECRET_ACCESS_KEY") or None
        if bool(access_key) != bool(secret_key):
            raise UserError(
                "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (anonymous access)"
            )
        if not access_key and os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
            from minio.credentials import IamAwsProvider

            credentials = IamAwsProvider()
        http = urllib3.PoolManager(
            maxsize=max(10, jobs),
            timeout=urllib3.Timeout(connect=10, read=120),
            # urllib3 retries 5xx answers; connection and mid-body failures are retried (and resumed) by
            # the transfer engine, with its own back-off.
            retries=urllib3.Retry(
                total=3, connect=0, read=0, backoff_factor=0.5, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self.client = Minio(
            netloc,
            access_key=access_key,
            secret_key=secret_key,
            session_token=os.environ.get("AWS_SESSION_TOKEN") or None,
            secure=secure,
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None,
            http_client=http,
            credentials=credentials,
        )

    def describe(self) -> str:
        return str(self.uri)

    def _translate(self, e: Exception, what: str) -> Exception:
        """Map a client exception to UserError (not worth retrying) or TransientError."""
        import urllib3
        from minio.error import S3Error

        if isinstance(e, S3Error):
            if e.code in _MISSING_CODES:
                thing = f"bucket {self.uri.name!r}" if e.code == "NoSuchBucket" else f"object {what}"
                return UserError(f"{what}: {thing} does not exist at {self.endpoint} ({e.code})")
            if e.code in _CREDENTIAL_CODES:
                return UserError(
                    f"{what}: access denied by {self.endpoint} ({e.code}); check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (from the Kubernetes secret) and the bucket policy"
                )
            return TransientError(f"{e.code}: {e.message}")
        if isinstance(e, urllib3.exceptions.HTTPError | OSError):
            return TransientError(f"{type(e).__name__}: {e}")
        from minio.error import MinioException

        if isinstance(e, MinioException):  # ServerError (non-XML 5xx), InvalidResponseError
            return TransientError(f"{type(e).__name__}: {e}")
        return e

    def _call(self, fn: Callable[[], object], what: str):
        return call_translated(fn, what, self._translate)

    def list(self) -> list[RemoteObject]:
        def listing() -> list[RemoteObject]:
            out = []
            for o in self.client.list_objects(self.uri.name, prefix=self.uri.prefix, recursive=True):
                if o.is_dir or o.object_name.endswith("/"):
                    continue  # folder placeholder objects
                etag = (o.etag or "").strip('"').lower()
                # A single-part upload's ETag is the object's md5; a multipart one ('...-N') is not.
                checksum = ("md5", etag) if _MD5.match(etag) else None
                out.append(
                    RemoteObject(
                        o.object_name, o.object_name[len(self.uri.prefix) :], o.size, checksum, etag or None
                    )
                )
            return out

        return self._call(listing, self.describe())

    def download(
        self, obj: RemoteObject, out: BinaryIO, offset: int, progress: Callable[[int], None]
    ) -> None:
        def fetch() -> None:
            response = self.client.get_object(self.uri.name, obj.key, offset=offset)
            try:
                for chunk in response.stream(_CHUNK):
                    out.write(chunk)
                    progress(len(chunk))
            finally:
                response.close()
                response.release_conn()

        self._call(fetch, f"s3://{self.uri.name}/{obj.key}")

    def upload(self, path: os.PathLike, rel: str) -> None:
        key = self.uri.key(rel)
        self._call(
            lambda: self.client.fput_object(self.uri.name, key, os.fspath(path)),
            f"s3://{self.uri.name}/{key}",
        )
