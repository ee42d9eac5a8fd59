"""hf://ORG/NAME[@REV] through huggingface_hub: download into the Hugging Face cache (reused across
runs, resumable), then link or copy the snapshot into the output folder; publish with a commit.

Environment (read at call time): `HF_TOKEN` (a read token of an account that accepted the model's
licence; a write token to publish), `HF_ENDPOINT` (a mirror), `HF_HOME` / `HF_HUB_CACHE` (cache
location, e.g. a PVC), `HF_HUB_OFFLINE=1` (use the cache only).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.fileio import link_or_copy
from fish_speech.storage.base import TransientError
from fish_speech.storage.fetch import FetchResult, finish_fetch, folder_lock
from fish_speech.storage.manifest import (
    MANIFEST_NAME,
    build_manifest,
    list_files,
    read_manifest,
)
from fish_speech.storage.safepath import safe_join
from fish_speech.storage.transfer import call_translated, retry
from fish_speech.storage.uri import StorageURI

log = logging.getLogger(__name__)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def hub_settings() -> dict:
    """Keyword arguments for huggingface_hub calls, from the environment as it is now (huggingface_hub
    reads some variables once at import, which is too early for a process that sets them later)."""
    cache = os.environ.get("HF_HUB_CACHE") or (
        os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None
    )
    return {
        "endpoint": os.environ.get("HF_ENDPOINT") or None,
        "token": os.environ.get("HF_TOKEN") or None,
        "cache_dir": cache,
    }


def _explain(e: Exception, uri: StorageURI) -> Exception:
    """UserError with what to do for errors a user can fix; TransientError for network trouble."""
    import httpx2
    from huggingface_hub import errors as hfe

    repo = uri.name
    if isinstance(e, hfe.GatedRepoError):
        return UserError(
            f"{uri}: gated repository. Log in at https://huggingface.co/{repo}, accept its licence, create a read "
            "token (https://huggingface.co/settings/tokens) and set HF_TOKEN (in Kubeflow: from a Kubernetes secret)"
        )
    if isinstance(e, hfe.RevisionNotFoundError):
        return UserError(
            f"{uri}: revision {uri.revision or 'main'!r} not found (a branch, tag or commit of {repo})"
        )
    if isinstance(e, hfe.RepositoryNotFoundError):
        hint = "check the name" + (
            "" if os.environ.get("HF_TOKEN") else ", or set HF_TOKEN if it is private or gated"
        )
        return UserError(f"{uri}: repository not found or not accessible ({hint})")
    if isinstance(e, hfe.HfHubHTTPError) and e.response is not None and e.response.status_code in (401, 403):
        return UserError(
            f"{uri}: access denied ({e.response.status_code}); check HF_TOKEN and that it may access {repo}"
        )
    if isinstance(e, hfe.LocalEntryNotFoundError | hfe.IncompleteSnapshotError | hfe.OfflineModeIsEnabled):
        if _env_true("HF_HUB_OFFLINE"):
            return UserError(
                f"{uri}: not (completely) in the Hugging Face cache and HF_HUB_OFFLINE is set: {e}"
            )
        return TransientError(f"cannot reach the Hub: {str(e).splitlines()[0]}")
    if isinstance(e, hfe.HfHubHTTPError) and e.response is not None and e.response.status_code >= 500:
        return TransientError(f"server error {e.response.status_code}")
    if isinstance(e, httpx2.TransportError | OSError):
        return TransientError(f"{type(e).__name__}: {e}")
    return e


def _call(fn, uri: StorageURI):
    return call_translated(fn, str(uri), lambda e, _: _explain(e, uri))


def fetch_hf(
    uri: StorageURI, out_dir: str | Path, *, allow_patterns: list[str] | None = None, jobs: int = 8
) -> FetchResult:
    """Download `uri` into the HF cache (files already there are reused; network errors are retried),
    place the snapshot in `out_dir`, check every LFS file against the Hub's sha256, write the manifest."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    out_dir = Path(out_dir)
    settings = hub_settings()
    offline = _env_true("HF_HUB_OFFLINE")

    def download() -> str:
        return snapshot_download(
            uri.name,
            revision=uri.revision,
            allow_patterns=allow_patterns,
            max_workers=jobs,
            local_files_only=offline,
            **settings,
        )

    snapshot = Path(retry(lambda: _call(download, uri), f"download {uri}"))
    commit = snapshot.name
    # The snapshot folder also holds files of earlier downloads of this commit: keep the requested ones.
    files = list(filter_repo_objects(list_files(snapshot), allow_patterns=allow_patterns))
    if not files:
        raise UserError(f"{uri}: no files" + (f" match {allow_patterns}" if allow_patterns else ""))
    with folder_lock(out_dir):
        placed = 0
        for rel in files:
            placed += link_or_copy((snapshot / rel).resolve(), safe_join(out_dir, rel, "repository file"))

        # The cache names each LFS blob (the weights) by its sha256, as the Hub reported it: check the copies.
        expected = {}
        for rel in files:
            blob = (snapshot / rel).resolve().name
            if len(blob) == 64 and all(c in "0123456789abcdef" for c in blob):
                expected[rel] = blob
        entries = build_manifest(out_dir, files, jobs)
        for rel in [r for r in files if r in expected and expected[r] != entries[r]]:
            if offline:
                raise UserError(
                    f"{uri}: {rel} in the Hugging Face cache is corrupt (sha256 mismatch) and HF_HUB_OFFLINE is set"
                )
            log.warning(
                "%s: %s in the Hugging Face cache is corrupt (sha256 mismatch); downloading it again",
                uri,
                rel,
            )
            path = _call(
                lambda rel=rel: hf_hub_download(
                    uri.name, rel, revision=commit, force_download=True, **settings
                ),
                uri,
            )
            link_or_copy(Path(path).resolve(), out_dir / rel)
            entries[rel] = build_manifest(out_dir, [rel], 1)[rel]
            if entries[rel] != expected[rel]:
                raise UserError(
                    f"{uri}: {rel}: sha256 mismatch after downloading again (expected {expected[rel]})"
                )

        previous = read_manifest(out_dir) or {}
        removed = finish_fetch(out_dir, entries, previous, {"source": str(uri), "commit": commit}, str(uri))
    log.info("%s: commit %s, %d files in %s", uri, commit, len(files), out_dir)
    return FetchResult(out_dir, entries, downloaded=placed, reused=len(files) - placed, removed=removed)


def publish_hf(
    src_dir: str | Path,
    files: list[str],
    manifest: bytes,
    uri: StorageURI,
    message: str,
    private: bool = True,
) -> str:
    """Upload `files` (relative to `src_dir`) and `manifest` as MANIFEST.sha256 to the model repo `uri` in
    one commit, creating the repo (private by default) if needed. Returns the commit URL."""
    from huggingface_hub import CommitOperationAdd, HfApi

    settings = hub_settings()
    if not settings["token"]:
        raise UserError(f"{uri}: publishing needs HF_TOKEN (a token with write access to {uri.name})")
    api = HfApi(endpoint=settings["endpoint"], token=settings["token"])

    def upload() -> str:
        api.create_repo(uri.name, private=private, exist_ok=True)
        operations = [CommitOperationAdd(rel, str(Path(src_dir) / rel)) for rel in files]
        operations.append(CommitOperationAdd(MANIFEST_NAME, manifest))
        info = api.create_commit(uri.name, operations, commit_message=message, revision=uri.revision)
        return str(info.commit_url)

    return retry(lambda: _call(upload, uri), f"publish to {uri}")
