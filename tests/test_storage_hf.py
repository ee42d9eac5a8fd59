# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""hf:// through huggingface_hub against the fake Hub on loopback (HF_ENDPOINT), and offline mode."""

from __future__ import annotations

import hashlib
import logging
import os
import uuid

import pytest
from test_storage_servers import READ_TOKEN, FlakyProxy, fast_retries, hf_env, hub  # noqa: F401

from fish_speech.errors import UserError
from fish_speech.fileio import sha256_file
from fish_speech.storage.hf import fetch_hf
from fish_speech.storage.manifest import read_manifest, read_state
from fish_speech.storage.uri import parse_uri

FILES = {
    "config.json": b'{"dim": 64}\n',
    "model.pth": os.urandom(300_000),
    "codec.pth": os.urandom(200_000),
    "tokenizer.tiktoken": b"YQ== 0\n",
    "special_tokens.json": b"{}\n",
}


def new_repo(hub, files=FILES, gated=False) -> str:
    repo = f"fishaudio/s1-{uuid.uuid4().hex[:8]}"
    hub.commit(repo, files, gated=gated)
    return repo


def test_fetch_writes_snapshot_and_manifest(hf_env, tmp_path):
    repo = new_repo(hf_env)
    result = fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out")
    for name, data in FILES.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert read_manifest(tmp_path / "out") == {n: hashlib.sha256(d).hexdigest() for n, d in FILES.items()}
    assert read_state(tmp_path / "out") == {
        "source": f"hf://{repo}",
        "commit": hf_env.repos[repo]["refs"]["main"],
    }
    assert result.content_hash and len(result.entries) == 5
    # the HF cache holds the files, the output is a link or a copy of them; a rerun reuses both
    assert any((tmp_path / "hf-home" / "hub").rglob("model.pth"))
    again = fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out")
    assert (again.downloaded, again.reused, again.entries) == (0, 5, result.entries)


def test_revision_and_allow_patterns(hf_env, tmp_path):
    repo = new_repo(hf_env)
    first = hf_env.repos[repo]["refs"]["main"]
    hf_env.commit(repo, {"config.json": b'{"dim": 128}\n'})
    fetch_hf(parse_uri(f"hf://{repo}@{first}"), tmp_path / "old", allow_patterns=["*.json"])
    assert sorted(p.name for p in (tmp_path / "old").iterdir() if not p.name.startswith(".")) == [
        "MANIFEST.sha256",
        "config.json",
        "special_tokens.json",
    ]
    assert (tmp_path / "old" / "config.json").read_bytes() == b'{"dim": 64}\n'
    fetch_hf(parse_uri(f"hf://{repo}", revision="main"), tmp_path / "full")
    # the cached snapshot now holds every file: a filtered fetch still places only what it asked for
    new = fetch_hf(
        parse_uri(f"hf://{repo}", revision="main"), tmp_path / "new", allow_patterns=["config.json"]
    )
    assert list(new.entries) == ["config.json"]
    assert (tmp_path / "new" / "config.json").read_bytes() == b'{"dim": 128}\n'


def test_gated_repo_without_token_says_what_to_do(hf_env, tmp_path, monkeypatch):
    repo = new_repo(hf_env, gated=True)
    with pytest.raises(UserError, match="gated repository.*accept its licence.*HF_TOKEN"):
        fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out")
    assert not (tmp_path / "out" / "model.pth").exists()
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out")
    assert (tmp_path / "out" / "model.pth").read_bytes() == FILES["model.pth"]
    assert f"Bearer {READ_TOKEN}" in hf_env.authorizations


def test_wrong_revision_and_missing_repo(hf_env, tmp_path):
    repo = new_repo(hf_env)
    with pytest.raises(UserError, match="revision 'v9' not found"):
        fetch_hf(parse_uri(f"hf://{repo}@v9"), tmp_path / "out")
    with pytest.raises(UserError, match="repository not found.*HF_TOKEN"):
        fetch_hf(parse_uri("hf://fishaudio/no-such-model"), tmp_path / "out")


def test_network_error_mid_download_is_retried(hf_env, tmp_path, monkeypatch):
    repo = new_repo(hf_env, files={**FILES, "model.pth": os.urandom(2_000_000)})
    proxy = FlakyProxy(hf_env.port)
    monkeypatch.setenv("HF_ENDPOINT", proxy.url)
    proxy.arm("cut", at=700_000, times=1)
    n = len(hf_env.requests)
    fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out", jobs=1)
    assert proxy.fired == 1
    assert (
        sha256_file(tmp_path / "out" / "model.pth")
        == hashlib.sha256(hf_env.files(repo)["model.pth"]).hexdigest()
    )
    assert [m for m, p, _ in hf_env.requests[n:] if p.endswith("/model.pth")].count("GET") == 2


def test_interrupted_download_leaves_no_file_under_the_final_name(hf_env, tmp_path):
    """A killed run leaves only temporary `*.incomplete` files in the HF cache (huggingface_hub 2.x
    restarts such a file on the next run); the rerun completes and verifies."""
    data = os.urandom(1_000_000)
    repo = new_repo(hf_env, files={**FILES, "model.pth": data})
    blobs = tmp_path / "hf-home" / "hub" / f"models--{repo.replace('/', '--')}" / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"{hashlib.sha256(data).hexdigest()}.0badc0de.incomplete").write_bytes(data[:400_000])
    fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "out")
    assert (tmp_path / "out" / "model.pth").read_bytes() == data
    assert read_manifest(tmp_path / "out")["model.pth"] == hashlib.sha256(data).hexdigest()


def test_offline_mode_uses_the_prefilled_cache(hf_env, tmp_path, monkeypatch):
    repo = new_repo(hf_env)
    online = fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "online")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    offline = fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "offline")
    assert offline.entries == online.entries
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        fetch_hf(parse_uri("hf://fishaudio/never-downloaded"), tmp_path / "x")


def test_corrupt_cache_file_is_detected_and_downloaded_again(hf_env, tmp_path, caplog):
    repo = new_repo(hf_env)
    fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "a")
    blob = next(p for p in (tmp_path / "hf-home" / "hub").rglob("blobs/*") if p.stat().st_size == 300_000)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "b")
    assert "corrupt" in caplog.text
    assert (tmp_path / "b" / "model.pth").read_bytes() == FILES["model.pth"]
