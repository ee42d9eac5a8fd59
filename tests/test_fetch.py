# ruff: noqa: F811  (pytest fixtures imported from test_storage_servers are parameters here)
"""The fetch-weights and fetch-data commands end to end: object stores on loopback, checks, content
hashes, kill-and-resume, and credentials that never reach the output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_storage_servers import (  # noqa: F401
    AWS_KEY_ID,
    AWS_SECRET,
    READ_TOKEN,
    WRITE_TOKEN,
    FlakyProxy,
    fast_retries,
    hf_env,
    hub,
    s3_env,
    s3_put,
    s3_server,
    tiny_checkpoint,
)

from fish_speech.cli import main
from fish_speech.storage.manifest import MANIFEST_NAME, list_files, read_manifest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo-voice"


def cli(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m fish_speech ARGS` with `env` added to this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "fish_speech", *map(str, args)],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def upload_dir(s3_server, bucket: str, root: Path, prefix: str) -> None:
    s3_put(s3_server[0], bucket, {f"{prefix}/{rel}": (root / rel).read_bytes() for rel in list_files(root)})


def test_fetch_weights_tiny_writes_a_checked_model_and_reuses_it(tmp_path, capsys, caplog):
    assert main(["fetch-weights", "tiny", "--output", str(tmp_path / "base")]) == 0
    names = sorted(p.name for p in (tmp_path / "base").iterdir() if not p.name.startswith("."))
    assert names == [
        MANIFEST_NAME,
        "codec.pth",
        "config.json",
        "model.pth",
        "special_tokens.json",
        "tokenizer.tiktoken",
    ]
    assert "ok: 2-layer dim-64 model" in capsys.readouterr().out
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "base").iterdir()}
    with caplog.at_level("INFO"):
        assert main(["fetch-weights", "tiny", "--output", str(tmp_path / "base")]) == 0
    assert "reusing" in caplog.text
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "base").iterdir()} == before


def test_fetch_weights_from_s3_checks_the_layout(s3_server, s3_env, tiny_checkpoint, tmp_path, capsys):
    upload_dir(s3_server, s3_env, tiny_checkpoint, "models/base")
    assert main(["fetch-weights", f"s3://{s3_env}/models/base", "--output", str(tmp_path / "base")]) == 0
    assert "ok:" in capsys.readouterr().out
    assert set(read_manifest(tmp_path / "base")) == set(list_files(tiny_checkpoint))
    # a prefix without codec.pth is refused before any GPU time, naming what is missing
    upload_dir(s3_server, s3_env, tiny_checkpoint, "models/broken")
    from minio import Minio

    Minio(
        s3_server[0].removeprefix("http://"), AWS_KEY_ID, AWS_SECRET, secure=False, region="us-east-1"
    ).remove_object(s3_env, "models/broken/codec.pth")
    assert main(["fetch-weights", f"s3://{s3_env}/models/broken", "--output", str(tmp_path / "broken")]) == 2
    assert "missing codec.pth" in capsys.readouterr().err


def test_killed_fetch_leaves_no_partial_file_and_the_rerun_resumes(s3_server, s3_env, tmp_path):
    big = os.urandom(4_000_000)
    s3_put(s3_server[0], s3_env, {"w/model.pth": big, "w/config.json": b"{}"})
    proxy = FlakyProxy(s3_server[1])
    proxy.arm("stall", at=2_500_000)
    out = tmp_path / "out"
    env = {"S3_ENDPOINT_URL": proxy.url}
    cmd = [
        sys.executable,
        "-m",
        "fish_speech",
        "fetch-weights",
        f"s3://{s3_env}/w",
        "--output",
        str(out),
        "--no-check",
    ]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    part = out / ".tmp-model.pth.part"
    deadline = time.monotonic() + 60
    while (
        not (proxy.fired and part.exists() and part.stat().st_size >= 1 << 20) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proxy.release.set()
    assert part.exists() and not (out / "model.pth").exists()  # no partial file under the final name
    assert not (out / MANIFEST_NAME).exists()
    done = part.stat().st_size
    proxy.arm(None)
    sent = proxy.bytes_to_client
    rerun = cli("fetch-weights", f"s3://{s3_env}/w", "--output", out, "--no-check", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming at byte {done}" in rerun.stderr
    assert (out / "model.pth").read_bytes() == big and not part.exists()
    assert proxy.bytes_to_client - sent < len(big) - done + 100_000  # only the rest came over the wire


def test_fetch_data_prints_a_content_hash_that_keys_the_cache(s3_server, s3_env, tmp_path, capsys):
    upload_dir(s3_server, s3_env, DEMO, "voices/demo")
    args = ["fetch-data", f"s3://{s3_env}/voices/demo", "--output", str(tmp_path / "data")]
    assert main([*args, "--hash-file", str(tmp_path / "hash.txt")]) == 0
    digest = capsys.readouterr().out.strip()
    assert len(digest) == 64 and (tmp_path / "hash.txt").read_text() == digest + "\n"
    # unchanged clips: same hash, whatever the source (content-addressed)
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == digest
    assert main(["fetch-data", str(DEMO), "--output", str(tmp_path / "local")]) == 0
    assert capsys.readouterr().out.strip() == digest
    # a new clip arrives: new hash
    s3_put(s3_server[0], s3_env, {"voices/demo/new_speaker/x.lab": b"new words"})
    assert main(args) == 0
    assert capsys.readouterr().out.strip() != digest


def test_credentials_never_reach_the_output(s3_server, s3_env, hf_env, tmp_path):
    s3_put(s3_server[0], s3_env, {"d/spk/a.lab": b"text", "d/spk/a.wav": b"RIFF"})
    runs = [
        cli("-v", "fetch-data", f"s3://{s3_env}/d", "--output", tmp_path / "ok"),
        cli("-v", "fetch-data", "s3://no-such-bucket/d", "--output", tmp_path / "bad"),
    ]
    repo = "fishaudio/secret-model"
    hf_env.commit(repo, {"config.json": b"{}"}, gated=True)
    hf = {"HF_TOKEN": READ_TOKEN}
    runs.append(cli("-v", "fetch-weights", f"hf://{repo}", "--output", tmp_path / "hf", "--no-check", env=hf))
    runs.append(cli("-v", "fetch-weights", f"hf://{repo}@nope", "--output", tmp_path / "hf2", env=hf))
    runs.append(cli("-v", "publish", tmp_path / "ok", f"s3://{s3_env}/published"))
    runs.append(cli("-v", "publish", tmp_path / "ok", "hf://me/published", env={"HF_TOKEN": WRITE_TOKEN}))
    assert [r.returncode for r in runs] == [0, 2, 0, 2, 0, 0], [r.stderr[-300:] for r in runs]
    assert "does not exist" in runs[1].stderr and "not found" in runs[3].stderr
    for r in runs:
        for secret in (AWS_SECRET, AWS_KEY_ID, READ_TOKEN, WRITE_TOKEN):
            assert secret not in r.stdout + r.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fetch-data", "hf://org/name", "--output", "x"], "fetch-data reads gs://, s3:// or a local folder"),
        (["fetch-weights", "ftp://host/x", "--output", "x"], "unsupported scheme 'ftp'"),
        (["fetch-weights", "s3://Bad_Bucket/x", "--output", "x"], "not a valid bucket name"),
        (["fetch-weights", "/no/such/dir", "--output", "x"], "/no/such/dir: no such directory"),
        (
            ["fetch-weights", "s3://bucket/x", "--revision", "v1", "--output", "x"],
            "--revision only applies to hf://",
        ),
    ],
)
def test_bad_sources_are_one_line_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_output_inside_a_local_source_is_refused(tmp_path, capsys):
    (tmp_path / "data" / "spk").mkdir(parents=True)
    (tmp_path / "data" / "spk" / "a.lab").write_text("x")
    assert main(["fetch-data", str(tmp_path / "data"), "--output", str(tmp_path / "data" / "copy")]) == 2
    assert "overlap" in capsys.readouterr().err
    assert not (tmp_path / "data" / "copy").exists()


def test_fetch_data_starts_fast_without_torch(tmp_path):
    code = (
        "import sys\nfrom fish_speech.cli import main\n"
        f"assert main(['fetch-data', {str(DEMO)!r}, '--output', {str(tmp_path / 'out')!r}]) == 0\n"
        "assert 'torch' not in sys.modules, 'fetch-data imported torch'\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
