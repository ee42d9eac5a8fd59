# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""`fish-speech publish DIR DEST` to s3:// (moto), gs:// (emulator), hf:// (fake Hub) and a folder,
then fetched back."""

from __future__ import annotations

import hashlib
import os

import pytest
from test_storage_servers import (  # noqa: F401
    READ_TOKEN,
    WRITE_TOKEN,
    fast_retries,
    gcs_env,
    gcs_server,
    hf_env,
    hub,
    s3_env,
    s3_server,
)

from fish_speech.cli import main
from fish_speech.errors import UserError
from fish_speech.storage.fetch import fetch_tree, open_store
from fish_speech.storage.manifest import MANIFEST_NAME, format_manifest, read_manifest
from fish_speech.storage.publish import publish_dir
from fish_speech.storage.uri import parse_uri

FILES = {"model.pth": os.urandom(400_000), "config.json": b'{"dim": 64}', "sub/notes.txt": b"merged"}


@pytest.fixture
def merged(tmp_path):
    root = tmp_path / "merged"
    for rel, data in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / ".tmp-model.pth.abc").write_bytes(b"leftover of a killed writer")
    return root


def expected_manifest() -> dict[str, str]:
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in FILES.items()}


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_publish_to_a_bucket_and_fetch_back(scheme, request, merged, tmp_path, capsys):
    bucket = request.getfixturevalue("s3_env" if scheme == "s3" else "gcs_env")
    dest = f"{scheme}://{bucket}/voices/alice"
    assert main(["publish", str(merged), dest]) == 0
    assert capsys.readouterr().out.strip() == dest + "/"
    uri = parse_uri(dest)
    store = open_store(uri)
    listed = {o.rel for o in store.list()}
    assert listed == {*FILES, MANIFEST_NAME}  # temporary files are not published
    back = fetch_tree(store, tmp_path / "back", source=uri.ident)
    assert back.entries == {
        **expected_manifest(),
        MANIFEST_NAME: hashlib.sha256(format_manifest(expected_manifest()).encode()).hexdigest(),
    }
    assert not (merged / MANIFEST_NAME).exists()  # the published folder is only read
    # a rerun uploads only the manifest again
    result = publish_dir(merged, uri, message="again")
    assert (result["uploaded"], result["skipped"]) == (1, 3)


def test_publish_to_hf_makes_one_commit(hf_env, merged, tmp_path, monkeypatch):
    repo = "me/alice-voice"
    with pytest.raises(UserError, match="needs HF_TOKEN"):
        publish_dir(merged, parse_uri(f"hf://{repo}"), message="x")
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    with pytest.raises(UserError, match="access denied|not found"):
        publish_dir(merged, parse_uri(f"hf://{repo}"), message="x")
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    assert main(["publish", str(merged), f"hf://{repo}", "-m", "LoRA r8 merged, 2000 steps"]) == 0
    sha = hf_env.repos[repo]["refs"]["main"]
    assert hf_env.repos[repo]["messages"][sha] == "LoRA r8 merged, 2000 steps"
    files = hf_env.files(repo)
    assert {k: files[k] for k in FILES} == FILES
    assert set(files) == {*FILES, MANIFEST_NAME}
    # and it can be fetched back as a model source
    from fish_speech.storage.hf import fetch_hf

    back = fetch_hf(parse_uri(f"hf://{repo}"), tmp_path / "back")
    assert {k: back.entries[k] for k in FILES} == expected_manifest()


def test_publish_to_a_folder_and_bad_input(merged, tmp_path):
    result = publish_dir(merged, parse_uri(str(tmp_path / "pvc" / "alice")), message="")
    assert read_manifest(tmp_path / "pvc" / "alice") == expected_manifest()
    assert result["uploaded"] == 4
    with pytest.raises(UserError, match="no such directory"):
        publish_dir(tmp_path / "nope", parse_uri(str(tmp_path / "x")), message="")
    with pytest.raises(UserError, match="overlap"):
        publish_dir(merged, parse_uri(str(merged)), message="")
    with pytest.raises(UserError, match="overlap"):
        publish_dir(merged, parse_uri(str(merged / "published")), message="")
    with pytest.raises(UserError, match="not a destination"):
        publish_dir(merged, parse_uri("tiny"), message="")


def test_publish_to_a_missing_bucket(s3_env, merged):
    with pytest.raises(UserError, match="does not exist"):
        publish_dir(merged, parse_uri("s3://no-such-bucket/x"), message="")
