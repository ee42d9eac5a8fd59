# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""Storage building blocks: URIs, safe paths, manifests and content hashes, retries, resumable copies."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from test_storage_servers import fast_retries  # noqa: F401

from fish_speech.errors import UserError
from fish_speech.storage.base import RemoteObject, TransientError
from fish_speech.storage.fetch import fetch_tree
from fish_speech.storage.local import LocalStore
from fish_speech.storage.manifest import (
    build_manifest,
    content_hash,
    format_manifest,
    list_files,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from fish_speech.storage.safepath import safe_join, safe_relpath
from fish_speech.storage.transfer import download_one, part_path, retry
from fish_speech.storage.uri import parse_uri


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("hf://fishaudio/openaudio-s1-mini", ("hf", "fishaudio/openaudio-s1-mini", "", None)),
        ("hf://fishaudio/openaudio-s1-mini@v1.0", ("hf", "fishaudio/openaudio-s1-mini", "", "v1.0")),
        ("gs://my-bucket/models/base/", ("gs", "my-bucket", "models/base/", None)),
        ("s3://mlpipeline/data", ("s3", "mlpipeline", "data/", None)),
        ("s3://mlpipeline", ("s3", "mlpipeline", "", None)),
        ("tiny", ("tiny", "", "", None)),
    ],
)
def test_parse_uri(text, fields):
    uri = parse_uri(text)
    assert (uri.scheme, uri.name, uri.prefix, uri.revision) == fields


def test_parse_uri_revision_flag_and_errors(tmp_path):
    assert parse_uri("hf://a/b@main", revision="abc").revision == "abc"
    assert parse_uri(str(tmp_path)).path == tmp_path
    for bad, msg in [
        ("hf://just-a-name", "ORG/NAME"),
        ("s3://x/y", "valid bucket"),
        ("http://x", "unsupported"),
    ]:
        with pytest.raises(UserError, match=msg):
            parse_uri(bad)


@pytest.mark.parametrize(
    "rel", ["../x", "a/../../x", "/etc/passwd", "a/..", "C:\\x", "a\\b", "", "..", "x\x00"]
)
def test_safe_relpath_refuses_escapes(rel):
    with pytest.raises(UserError):
        safe_relpath(rel)


def test_safe_join_normalises_and_stays_inside(tmp_path):
    assert safe_join(tmp_path, "a//b/./c.wav") == tmp_path / "a" / "b" / "c.wav"
    (tmp_path / "link").symlink_to("/tmp")
    with pytest.raises(UserError, match="resolves outside"):
        safe_join(tmp_path, "link/x")


def test_manifest_round_trip_verify_and_content_hash(tmp_path):
    (tmp_path / "spk").mkdir()
    (tmp_path / "spk" / "a.lab").write_text("hi")
    (tmp_path / "b.wav").write_bytes(b"\x00" * 10)
    (tmp_path / ".tmp-b.wav.part").write_bytes(b"partial")
    entries = build_manifest(tmp_path)
    assert list(entries) == ["b.wav", "spk/a.lab"]  # temporary files skipped
    assert entries["spk/a.lab"] == hashlib.sha256(b"hi").hexdigest()
    write_manifest(tmp_path, entries)
    text = (tmp_path / "MANIFEST.sha256").read_text()
    assert (
        text == format_manifest(entries) == f"{entries['b.wav']}  b.wav\n{entries['spk/a.lab']}  spk/a.lab\n"
    )
    assert read_manifest(tmp_path) == entries and "MANIFEST.sha256" not in list_files(tmp_path)
    assert content_hash(entries) == hashlib.sha256(text.encode()).hexdigest()
    assert verify_manifest(tmp_path, entries) == []
    (tmp_path / "b.wav").write_bytes(b"\x01" * 10)
    (tmp_path / "spk" / "a.lab").unlink()
    assert verify_manifest(tmp_path, entries) == [
        "b.wav: sha256 mismatch (file changed since it was fetched)",
        "spk/a.lab: missing",
    ]
    # the content hash depends on names and contents, not on order or location
    assert content_hash(dict(reversed(entries.items()))) == content_hash(entries)
    assert content_hash({"c.wav": entries["b.wav"]}) != content_hash({"b.wav": entries["b.wav"]})
    (tmp_path / "MANIFEST.sha256").write_text("not a manifest\n")
    with pytest.raises(UserError, match="MANIFEST.sha256:1"):
        read_manifest(tmp_path)


def test_retry_backs_off_then_gives_up():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("connection reset")
        return "ok"

    assert retry(flaky, "thing") == "ok" and len(calls) == 3
    with pytest.raises(UserError, match="thing: giving up after 4 attempts: connection reset"):
        retry(lambda: (_ for _ in ()).throw(TransientError("connection reset")), "thing")


class BreakingStore(LocalStore):
    """A local store whose reads fail after `fail_after` bytes, `failures` times."""

    def __init__(self, root: Path, fail_after: int, failures: int) -> None:
        super().__init__(root)
        self.fail_after, self.failures, self.offsets = fail_after, failures, []

    def download(self, obj, out, offset, progress):
        self.offsets.append(offset)
        if self.failures:
            self.failures -= 1
            with open(self.root / obj.key, "rb") as f:
                f.seek(offset)
                out.write(f.read(self.fail_after))
            raise TransientError("connection reset by peer")
        super().download(obj, out, offset, progress)


def test_download_resumes_after_failures_and_renames_only_when_complete(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    data = bytes(range(256)) * 400
    (src / "model.pth").write_bytes(data)
    store = BreakingStore(src, fail_after=30_000, failures=2)
    (obj,) = store.list()
    dest = tmp_path / "out" / "model.pth"
    seen = []
    download_one(store, obj, dest, seen.append)
    assert store.offsets == [0, 30_000, 60_000]
    assert dest.read_bytes() == data and not part_path(dest).exists()
    assert sum(seen) == len(data)  # progress of failed attempts is taken back


def test_bad_checksum_is_never_renamed_to_the_final_name(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"abc")
    obj = RemoteObject("a.bin", "a.bin", 3, ("sha256", "0" * 64))
    with pytest.raises(UserError, match="checksum mismatch"):
        download_one(LocalStore(src), obj, tmp_path / "out" / "a.bin", lambda n: None)
    assert not (tmp_path / "out" / "a.bin").exists()


def test_fetch_tree_from_a_folder_leaves_user_files_alone(tmp_path):
    src = tmp_path / "src"
    (src / "spk").mkdir(parents=True)
    (src / "spk" / "a.lab").write_text("one")
    (src / "spk" / "b.lab").write_text("two")
    out = tmp_path / "out"
    fetch_tree(LocalStore(src), out, source=str(src))
    (out / "notes.txt").write_text("mine")
    (src / "spk" / "b.lab").unlink()
    result = fetch_tree(LocalStore(src), out, source=str(src))
    assert (result.reused, result.removed) == (1, 1)
    assert (out / "notes.txt").exists() and not (out / "spk" / "b.lab").exists()
    assert list(read_manifest(out)) == ["spk/a.lab"]
    with pytest.raises(UserError, match="no objects match"):
        fetch_tree(LocalStore(src), out, source=str(src), allow_patterns=["*.wav"])


def test_concurrent_fetches_into_one_folder_take_turns(tmp_path):
    import threading

    src = tmp_path / "src"
    src.mkdir()
    data = bytes(range(256)) * 4000
    (src / "model.pth").write_bytes(data)

    class SlowStore(LocalStore):
        def download(self, obj, out, offset, progress):
            with open(self.root / obj.key, "rb") as f:
                f.seek(offset)
                while chunk := f.read(100_000):
                    out.write(chunk)
                    threading.Event().wait(0.01)

    results = []
    threads = [
        threading.Thread(
            target=lambda: results.append(fetch_tree(SlowStore(src), tmp_path / "out", source="s"))
        )
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted((r.downloaded, r.reused) for r in results) == [(0, 1), (1, 0)]
    assert (tmp_path / "out" / "model.pth").read_bytes() == data
