# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""s3:// through the minio client against moto's S3 server on loopback (and a fault-injecting proxy)."""

from __future__ import annotations

import hashlib
import logging
import os

import pytest
from test_storage_servers import FlakyProxy, fast_retries, s3_env, s3_put, s3_server  # noqa: F401

from fish_speech.errors import UserError
from fish_speech.storage.fetch import fetch_tree, open_store
from fish_speech.storage.manifest import read_manifest, read_state
from fish_speech.storage.uri import parse_uri

DATA = {
    "spk1/a.wav": os.urandom(3000),
    "spk1/a.lab": b"hello",
    "spk2/b.flac": os.urandom(5000),
    "spk2/b.lab": "wörld".encode(),
}


def put(s3_server, bucket, files, prefix="data/"):
    s3_put(s3_server[0], bucket, {prefix + k: v for k, v in files.items()})


def fetch(bucket, out, prefix="data", **kw):
    uri = parse_uri(f"s3://{bucket}/{prefix}")
    return fetch_tree(open_store(uri), out, source=uri.ident, **kw)


def test_fetch_mirrors_prefix_with_manifest(s3_server, s3_env, tmp_path):
    put(s3_server, s3_env, DATA)
    put(s3_server, s3_env, {"other/x.wav": b"not under the prefix"}, prefix="")
    result = fetch(s3_env, tmp_path / "out")
    for rel, data in DATA.items():
        assert (tmp_path / "out" / rel).read_bytes() == data
    assert not (tmp_path / "out" / "other").exists()
    assert read_manifest(tmp_path / "out") == {k: hashlib.sha256(v).hexdigest() for k, v in DATA.items()}
    state = read_state(tmp_path / "out")
    assert state["source"] == f"s3://{s3_env}/data/" and set(state["versions"]) == set(DATA)
    assert (result.downloaded, result.reused) == (4, 0)


def test_rerun_reuses_verified_files_and_follows_changes(s3_server, s3_env, tmp_path):
    put(s3_server, s3_env, DATA)
    first = fetch(s3_env, tmp_path / "out")
    again = fetch(s3_env, tmp_path / "out")
    assert (again.downloaded, again.reused, again.content_hash) == (0, 4, first.content_hash)
    # the source changes: one clip edited, one added, one deleted
    import boto3

    put(s3_server, s3_env, {"spk1/a.lab": b"changed", "spk3/c.wav": b"new"})
    boto3.client(
        "s3",
        endpoint_url=s3_server[0],
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    ).delete_object(Bucket=s3_env, Key="data/spk2/b.lab")
    changed = fetch(s3_env, tmp_path / "out")
    assert (changed.downloaded, changed.reused, changed.removed) == (2, 2, 1)
    assert (tmp_path / "out" / "spk1" / "a.lab").read_bytes() == b"changed"
    assert not (tmp_path / "out" / "spk2" / "b.lab").exists()
    assert changed.content_hash != first.content_hash


def test_corrupted_local_copy_is_detected_and_fetched_again(s3_server, s3_env, tmp_path, caplog):
    put(s3_server, s3_env, DATA)
    fetch(s3_env, tmp_path / "out")
    wav = tmp_path / "out" / "spk1" / "a.wav"
    data = bytearray(wav.read_bytes())
    data[10] ^= 1
    wav.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        result = fetch(s3_env, tmp_path / "out")
    assert "changed since it was fetched" in caplog.text
    assert result.downloaded == 1 and wav.read_bytes() == DATA["spk1/a.wav"]


@pytest.mark.parametrize("key", ["data/../escape.wav", "data//etc/abs.wav", "data/spk/../../up.lab"])
def test_unsafe_keys_never_write_outside(s3_server, s3_env, tmp_path, key):
    put(s3_server, s3_env, DATA)
    s3_put(s3_server[0], s3_env, {key: b"evil"})
    with pytest.raises(UserError, match="refusing to write outside"):
        fetch(s3_env, tmp_path / "root" / "out")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == []  # refused before any download


def test_missing_bucket_and_prefix(s3_env, tmp_path):
    with pytest.raises(UserError, match="bucket 'no-such-bucket' does not exist"):
        fetch("no-such-bucket", tmp_path / "out")
    with pytest.raises(UserError, match="no objects under this prefix"):
        fetch(s3_env, tmp_path / "out", prefix="nothing/here")


def test_network_error_mid_download_is_retried_and_resumed(s3_server, s3_env, tmp_path, monkeypatch, caplog):
    big = os.urandom(3_000_000)
    put(s3_server, s3_env, {"model.pth": big})
    proxy = FlakyProxy(s3_server[1])
    monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)
    proxy.arm("cut", at=1_500_000, times=2)
    with caplog.at_level(logging.INFO):
        fetch(s3_env, tmp_path / "out", jobs=1)
    assert proxy.fired == 2
    assert (tmp_path / "out" / "model.pth").read_bytes() == big
    assert "resuming at byte" in caplog.text
    # resumed, not restarted: well under 2 full copies went through the proxy
    assert proxy.bytes_to_client < 2 * len(big)


def test_corruption_in_transit_fails_the_checksum_and_is_fetched_again(
    s3_server, s3_env, tmp_path, monkeypatch, caplog
):
    big = os.urandom(500_000)
    put(s3_server, s3_env, {"model.pth": big})
    proxy = FlakyProxy(s3_server[1])
    monkeypatch.setenv("S3_ENDPOINT_URL", proxy.url)
    proxy.arm("corrupt", at=200_000, times=1)
    with caplog.at_level(logging.WARNING):
        fetch(s3_env, tmp_path / "out", jobs=1)
    assert "md5 checksum mismatch" in caplog.text
    assert (tmp_path / "out" / "model.pth").read_bytes() == big
    # a source that keeps sending bad bytes is an error, and nothing lands under the final name
    proxy.arm("corrupt", at=200_000, times=100)
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch(s3_env, tmp_path / "other", jobs=1)
    assert not (tmp_path / "other" / "model.pth").exists()


def test_unreachable_endpoint_gives_up_with_a_clear_error(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    with pytest.raises(UserError, match="giving up after"):
        fetch(s3_env, tmp_path / "out")


def test_bad_endpoint_and_half_credentials(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://host:9000/path")
    with pytest.raises(UserError, match="S3_ENDPOINT_URL"):
        fetch(s3_env, tmp_path / "out")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError, match="AWS_SECRET_ACCESS_KEY"):
        fetch(s3_env, tmp_path / "out")


def test_rewritten_multipart_object_of_the_same_size_is_fetched_again(s3_server, s3_env, tmp_path):
    """Multipart uploads have no md5 ETag: the ETag still changes when the object is rewritten."""
    import io

    from minio import Minio
    from test_storage_servers import AWS_KEY_ID, AWS_SECRET

    client = Minio(
        s3_server[0].removeprefix("http://"), AWS_KEY_ID, AWS_SECRET, secure=False, region="us-east-1"
    )
    size = 6 << 20
    for content in (b"a", b"b"):
        client.put_object(s3_env, "w/model.pth", io.BytesIO(content * size), -1, part_size=5 << 20)
        (obj,) = open_store(parse_uri(f"s3://{s3_env}/w")).list()
        assert obj.checksum is None and obj.version.endswith("-2")  # two parts
        result = fetch(s3_env, tmp_path / "out", prefix="w")
        assert result.downloaded == 1 and (tmp_path / "out" / "model.pth").read_bytes() == content * size
    assert fetch(s3_env, tmp_path / "out", prefix="w").reused == 1
