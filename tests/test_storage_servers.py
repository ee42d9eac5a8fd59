"""Real servers on loopback for the storage tests (started once per session), and their own checks.

- S3: moto's ThreadedMotoServer, used through the `minio` client.
- GCS: gcp-storage-emulator, used through google-cloud-storage (STORAGE_EMULATOR_HOST).
- Hugging Face: `FakeHub`, a small HTTP server implementing the Hub endpoints that `snapshot_download`,
  `create_repo` and `upload_folder` call (repo info, tree, resolve with ranges, gated repos, preupload,
  commit), reached through HF_ENDPOINT.
- `FlakyProxy`: a TCP proxy that can cut, stall or corrupt one response mid-body, to test retries,
  resumption and checksum checks against the real clients.

Other storage test modules import the fixtures from here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

READ_TOKEN = "hf_readTOKENsentinel0123456789"
WRITE_TOKEN = "hf_writeTOKENsentinel0123456789"
AWS_KEY_ID = "AKIAKEYIDSENTINEL0001"
AWS_SECRET = "secretSENTINELvalue/abcdefghijklmnop"


# ----------------------------------------------------------------------------- fake Hugging Face Hub


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """In-memory model repos: {repo: {"gated": bool, "commits": {sha: {path: bytes}}, "refs": {name: sha}}}."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.authorizations: list[str | None] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(
        self,
        repo: str,
        files: dict[str, bytes],
        *,
        gated: bool = False,
        branch: str = "main",
        message: str = "",
    ) -> str:
        """Create a commit on `branch` holding the previous tree plus `files`; returns its sha."""
        with self.lock:
            r = self.repos.setdefault(repo, {"gated": gated, "commits": {}, "refs": {}, "messages": {}})
            r["gated"] = r["gated"] or gated
            tree = dict(r["commits"].get(r["refs"].get(branch), {}))
            tree.update(files)
            sha = hashlib.sha1(f"{repo}{len(r['commits'])}{uuid.uuid4()}".encode()).hexdigest()
            r["commits"][sha] = tree
            r["refs"][branch] = sha
            r["messages"][sha] = message
            return sha

    def files(self, repo: str, revision: str = "main") -> dict[str, bytes]:
        r = self.repos[repo]
        return r["commits"][r["refs"].get(revision, revision)]

    def _handler(hub):  # noqa: N805 - closure over the hub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            # -- helpers
            def _send(
                self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _json(self, status: int, obj, headers: dict | None = None) -> None:
                self._send(
                    status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})}
                )

            def _error(self, status: int, code: str, message: str) -> None:
                self._json(status, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

            def _token(self) -> str | None:
                auth = self.headers.get("Authorization") or ""
                return auth.removeprefix("Bearer ").strip() or None

            def _repo(self, repo: str, write: bool = False):
                """The repo dict, or None after sending the Hub's error."""
                token = self._token()
                r = hub.repos.get(repo)
                if r is None or (token is not None and token not in (READ_TOKEN, WRITE_TOKEN)):
                    self._error(401, "RepoNotFound", f"Repository Not Found for url: {self.path}.")
                    return None
                if write and token != WRITE_TOKEN:
                    self._error(403, "Forbidden", "You don't have the rights to create a commit in this repo")
                    return None
                if r["gated"] and token is None:
                    self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo} is restricted. You must have access to it and be authenticated to access it.",
                    )
                    return None
                return r

            def _resolve(self, r: dict, rev: str) -> str | None:
                rev = unquote(rev)
                sha = r["refs"].get(rev) or (rev if rev in r["commits"] else None)
                if sha is None:
                    self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
                return sha

            def _entry(self, path: str, data: bytes) -> dict:
                entry = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}
                if path.endswith((".pth", ".bin")):
                    entry["lfs"] = {
                        "oid": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 134,
                    }
                return entry

            # -- routes
            def do_HEAD(self) -> None:
                self._route("HEAD")

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def _route(self, method: str) -> None:
                url = urlsplit(self.path)
                parts = [unquote(p) for p in url.path.strip("/").split("/")]
                with hub.lock:
                    hub.requests.append((method, url.path, self.headers.get("Range")))
                    hub.authorizations.append(self.headers.get("Authorization"))
                body = (
                    self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
                )
                if parts[:2] == ["api", "models"] and len(parts) >= 4:
                    repo = f"{parts[2]}/{parts[3]}"
                    rest = parts[4:]
                    if method == "GET" and (not rest or rest[0] == "revision"):
                        return self._info(repo, rest[1] if len(rest) > 1 else "main")
                    if method == "GET" and rest and rest[0] == "tree":
                        return self._tree(repo, rest[1], "/".join(rest[2:]))
                    if method == "POST" and rest and rest[0] == "preupload":
                        return self._preupload(repo, body)
                    if method == "POST" and rest and rest[0] == "commit":
                        return self._commit(repo, rest[1], body)
                if parts[:3] == ["api", "repos", "create"] and method == "POST":
                    return self._create(json.loads(body or b"{}"))
                if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
                    return self._file(
                        f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]), method == "HEAD"
                    )
                self._error(404, "NotFound", f"no route {method} {url.path} {parse_qs(url.query)}")

            def _info(self, repo: str, rev: str) -> None:
                r = self._repo(repo)
                if r is None:
                    return
                sha = self._resolve(r, rev)
                if sha is None:
                    return
                siblings = [{"rfilename": p} for p in sorted(r["commits"][sha])]
                self._json(
                    200,
                    {
                        "id": repo,
                        "modelId": repo,
                        "sha": sha,
                        "siblings": siblings,
                        "private": False,
                        "gated": "manual" if r["gated"] else False,
                    },
                )

            def _tree(self, repo: str, rev: str, prefix: str) -> None:
                r = self._repo(repo)
                if r is None:
                    return
                sha = self._resolve(r, rev)
                if sha is None:
                    return
                files = r["commits"][sha]
                self._json(200, [self._entry(p, files[p]) for p in sorted(files) if p.startswith(prefix)])

            def _file(self, repo: str, rev: str, path: str, head: bool) -> None:
                r = self._repo(repo)
                if r is None:
                    return
                sha = self._resolve(r, rev)
                if sha is None:
                    return
                files = r["commits"][sha]
                if path not in files:
                    return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
                data = files[path]
                entry = self._entry(path, data)
                etag = entry["lfs"]["oid"] if "lfs" in entry else entry["oid"]
                headers = {"X-Repo-Commit": sha, "ETag": f'"{etag}"', "Accept-Ranges": "bytes"}
                if "lfs" in entry:
                    headers.update({"X-Linked-Etag": f'"{etag}"', "X-Linked-Size": str(len(data))})
                rng = self.headers.get("Range")
                if rng and not head and rng.startswith("bytes="):
                    start_s, _, end_s = rng[6:].partition("-")
                    start, end = int(start_s or 0), int(end_s) if end_s else len(data) - 1
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    return self._send(206, data[start : end + 1], headers)
                if head:
                    self.send_response(200)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return
                self._send(200, data, headers)

            def _create(self, payload: dict) -> None:
                if self._token() != WRITE_TOKEN:
                    return self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
                repo = f"{payload.get('organization') or 'user'}/{payload['name']}"
                if repo in hub.repos:
                    return self._error(409, "Conflict", "You already created this model repo")
                with hub.lock:
                    hub.repos[repo] = {"gated": False, "commits": {}, "refs": {}, "messages": {}}
                self._json(200, {"url": f"{hub.url}/{repo}", "name": repo})

            def _preupload(self, repo: str, body: bytes) -> None:
                if self._repo(repo, write=True) is None:
                    return
                files = json.loads(body)["files"]
                self._json(
                    200,
                    {
                        "files": [
                            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files
                        ]
                    },
                )

            def _commit(self, repo: str, rev: str, body: bytes) -> None:
                if self._repo(repo, write=True) is None:
                    return
                files, message = {}, ""
                for line in io.BytesIO(body).read().decode().splitlines():
                    item = json.loads(line)
                    if item["key"] == "header":
                        message = item["value"]["summary"]
                    elif item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                    else:
                        return self._error(400, "BadRequest", f"unsupported operation {item['key']}")
                sha = hub.commit(repo, files, branch=unquote(rev), message=message)
                self._json(
                    200, {"success": True, "commitOid": sha, "commitUrl": f"{hub.url}/{repo}/commit/{sha}"}
                )

        return Handler


# ----------------------------------------------------------------------------- fault-injecting proxy


class FlakyProxy:
    """TCP proxy to `target_port`. Arm it with `cut`, `stall` or `corrupt` at a byte offset of a
    server->client stream; it fires on the first connection whose response passes that offset, `times` times."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode: str | None = None
        self.at = 0
        self.times = 0
        self.fired = 0
        self.bytes_to_client = 0
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, mode: str | None, at: int = 0, times: int = 1) -> None:
        with self.lock:
            self.mode, self.at, self.times, self.fired = mode, at, times, 0
            self.release.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            client.close()
            return
        state = {"new_request": False}  # offsets count from the start of each response on the connection
        threading.Thread(target=self._pump_up, args=(client, server, state), daemon=True).start()
        seen = 0
        try:
            while data := server.recv(65536):
                if state["new_request"]:
                    state["new_request"], seen = False, 0
                with self.lock:
                    fire = (
                        self.mode is not None
                        and self.fired < self.times
                        and seen <= self.at < seen + len(data)
                    )
                    if fire:
                        self.fired += 1
                        mode = self.mode
                if fire:
                    cut = self.at - seen
                    if mode == "corrupt":
                        data = data[:cut] + bytes([data[cut] ^ 0xFF]) + data[cut + 1 :]
                    else:
                        client.sendall(data[:cut])
                        with self.lock:
                            self.bytes_to_client += cut
                        if mode == "stall":
                            self.release.wait(60)
                        break
                client.sendall(data)
                seen += len(data)
                with self.lock:
                    self.bytes_to_client += len(data)
        except OSError:
            pass
        finally:
            for s in (client, server):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    @staticmethod
    def _pump_up(client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while data := client.recv(65536):
                state["new_request"] = True
                server.sendall(data)
        except OSError:
            pass


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback: (endpoint URL, port)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}", port
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """S3 settings of a pod that reads its keys from a Kubernetes secret; returns a fresh bucket name."""
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server[0])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from minio import Minio

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    Minio(
        s3_server[0].removeprefix("http://"), AWS_KEY_ID, AWS_SECRET, secure=False, region="us-east-1"
    ).make_bucket(bucket)
    return bucket


def s3_put(endpoint: str, bucket: str, files: dict[str, bytes]) -> None:
    """Put objects with boto3 (which, unlike minio, also writes keys such as 'a/../b')."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=AWS_KEY_ID,
        aws_secret_access_key=AWS_SECRET,
        region_name="us-east-1",
    )
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


@pytest.fixture(scope="session")
def gcs_server():
    """gcp-storage-emulator on loopback: (endpoint URL, port)."""
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    port = server._api._httpd.server_address[1]
    yield f"http://127.0.0.1:{port}", port
    server.stop()


@pytest.fixture
def gcs_env(gcs_server, monkeypatch):
    """GCS settings pointing at the emulator; returns a fresh bucket name."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server[0])
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test-project")
    from google.cloud import storage

    bucket = f"test-{uuid.uuid4().hex[:12]}"
    storage.Client().create_bucket(bucket)
    return bucket


def gcs_put(bucket: str, files: dict[str, bytes]) -> None:
    from google.cloud import storage

    b = storage.Client().bucket(bucket)
    for key, data in files.items():
        b.blob(key).upload_from_string(data)


@pytest.fixture(scope="session")
def hub():
    server = FakeHub()
    yield server
    server.stop()


@pytest.fixture
def hf_env(hub, monkeypatch, tmp_path):
    """HF_ENDPOINT at the fake hub, an empty cache under tmp_path, no token, online."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    return hub


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    """Back-off in milliseconds instead of seconds."""
    from fish_speech.storage import transfer

    monkeypatch.setattr(transfer, "BASE_DELAY", 0.01)
    monkeypatch.setattr(transfer, "ATTEMPTS", 4)


# ----------------------------------------------------------------------------- the servers themselves


def test_fake_hub_serves_ranges_and_gating(hub):
    import urllib.error
    import urllib.request

    hub.commit("org/plain", {"a.bin": b"0123456789"})
    req = urllib.request.Request(f"{hub.url}/org/plain/resolve/main/a.bin", headers={"Range": "bytes=3-"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == b"3456789"
    hub.commit("org/locked", {"a.bin": b"x"}, gated=True)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{hub.url}/org/locked/resolve/main/a.bin")
    assert e.value.code == 401 and e.value.headers["X-Error-Code"] == "GatedRepo"


def test_flaky_proxy_cuts_a_response(hub):
    import http.client

    hub.commit("org/proxied", {"big.bin": bytes(200_000)})
    proxy = FlakyProxy(hub.port)
    proxy.arm("cut", at=50_000)
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port)
    conn.request("GET", "/org/proxied/resolve/main/big.bin")
    with pytest.raises(http.client.IncompleteRead):
        conn.getresponse().read()
    assert proxy.fired == 1


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random base model in the real layout (written once per session, ~10 s): treat as read-only."""
    from fish_speech.base_model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "base", seed=0)
