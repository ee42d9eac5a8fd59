# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""gs:// through google-cloud-storage against gcp-storage-emulator on loopback."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest
from test_storage_servers import FlakyProxy, fast_retries, gcs_env, gcs_put, gcs_server  # noqa: F401

from fish_speech.errors import UserError
from fish_speech.storage.fetch import fetch_tree, open_store
from fish_speech.storage.manifest import read_manifest
from fish_speech.storage.uri import parse_uri

DATA = {"spk1/a.wav": os.urandom(4000), "spk1/a.lab": b"hello", "model.pth": os.urandom(700_000)}


def fetch(bucket, out, prefix="p", **kw):
    uri = parse_uri(f"gs://{bucket}/{prefix}")
    return fetch_tree(open_store(uri), out, source=uri.ident, **kw)


def test_fetch_rerun_and_patterns(gcs_env, tmp_path):
    gcs_put(gcs_env, {f"p/{k}": v for k, v in DATA.items()})
    result = fetch(gcs_env, tmp_path / "out")
    assert read_manifest(tmp_path / "out") == {k: hashlib.sha256(v).hexdigest() for k, v in DATA.items()}
    assert result.downloaded == 3
    assert fetch(gcs_env, tmp_path / "out").reused == 3
    only = fetch(gcs_env, tmp_path / "labs", allow_patterns=["*.lab"])
    assert list(only.entries) == ["spk1/a.lab"]


def test_missing_bucket_and_prefix(gcs_env, tmp_path):
    with pytest.raises(UserError, match="not found"):
        fetch("no-such-bucket", tmp_path / "out")
    with pytest.raises(UserError, match="no objects under this prefix"):
        fetch(gcs_env, tmp_path / "out", prefix="empty")


def test_network_error_mid_download_is_retried(gcs_server, gcs_env, tmp_path, monkeypatch, caplog):
    gcs_put(gcs_env, {f"p/{k}": v for k, v in DATA.items()})
    proxy = FlakyProxy(gcs_server[1])
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    proxy.arm("cut", at=300_000, times=1)
    with caplog.at_level(logging.INFO):
        fetch(gcs_env, tmp_path / "out", jobs=1)
    assert proxy.fired == 1
    assert (tmp_path / "out" / "model.pth").read_bytes() == DATA["model.pth"]


def test_missing_key_file_falls_back_to_default_credentials(gcs_env, tmp_path, monkeypatch):
    """The pipeline sets GOOGLE_APPLICATION_CREDENTIALS to an optional secret's mount path."""
    gcs_put(gcs_env, {"p/a.lab": b"x"})
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent" / "key.json"))
    assert fetch(gcs_env, tmp_path / "out").downloaded == 1
    assert "GOOGLE_APPLICATION_CREDENTIALS" not in os.environ
