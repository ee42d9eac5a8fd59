"""The data steps: content-hash, fetch-data, validate, normalize.

KFP's cache key covers a task's parameters and the *identity* of its input artifacts, so a step that
consumed a freshly fetched artifact would never hit the cache, and a fetch step cached on the source URL
alone would serve stale clips. Hence two steps: `content_hash_step` (never cached) syncs the clips into
a mirror on the workspace volume (only new or changed files are downloaded) and returns the sha256 of
their manifest of file checksums; `fetch_data_step` is cached on (source, hash) and copies the mirror
into its artifact, so a rerun on unchanged clips reuses its artifact, and with it every downstream data
step's cache entry. Without a mirror folder (`mirror_root` empty) content-hash downloads into a
temporary folder and fetch-data downloads again from the source.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from fish_speech.steps.common import StepError, cpu_workers, report_metrics, run_command


def mirror_path(mirror_root: str, source: str) -> Path:
    """The mirror folder of `source` under `mirror_root` (one per source URI)."""
    return Path(mirror_root) / "sources" / hashlib.sha256(source.encode()).hexdigest()[:16]


def _fetch(origin: str, dest: str | Path) -> str:
    """`fish-speech fetch-data ORIGIN --output DEST`; the content hash it wrote."""
    with tempfile.TemporaryDirectory(prefix="fetch-data-") as tmp:
        hash_file = Path(tmp) / "hash"
        run_command(["fetch-data", origin, "--output", dest, "--hash-file", hash_file])
        return hash_file.read_text(encoding="utf-8").strip()


def content_hash_step(source: str, mirror_root: str) -> str:
    """The content hash of the clips at `source` (gs://, s3://, or a path on the mounted PVC)."""
    if mirror_root:
        dest = mirror_path(mirror_root, source)
        digest = _fetch(source, dest)
        print(f"content hash of {source}: {digest} (mirror {dest})")
        return digest
    with tempfile.TemporaryDirectory(prefix="content-hash-") as tmp:
        digest = _fetch(source, Path(tmp) / "data")
    print(f"content hash of {source}: {digest}")
    return digest


def fetch_data_step(source: str, content_hash: str, mirror_root: str, output: str) -> None:
    """Copy the mirror (or `source` itself) into `output`; fail unless the files hash to `content_hash`."""
    origin = source
    if mirror_root and mirror_path(mirror_root, source).is_dir():
        origin = str(mirror_path(mirror_root, source))
    digest = _fetch(origin, output)
    # The task's cache entry is keyed on `content_hash`: it must describe exactly these files.
    if digest != content_hash:
        raise StepError(
            f"the clips of {source} changed since content-hash ran (hash {digest}, expected {content_hash}); "
            "rerun the pipeline"
        )


def validate_step(
    data: str, report: str, max_clip_seconds: float, source: str | None = None
) -> dict[str, float]:
    """`fish-speech validate DATA --report REPORT [--source SOURCE]`; the report's numbers.

    `source` (where DATA was fetched from) is what the report names as the data.
    """
    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        report_json = Path(tmp) / "report.json"
        argv = ["validate", data, "--report", report, "--json", report_json]
        if source:
            argv += ["--source", source]
        if max_clip_seconds > 0:
            argv += ["--max-seconds", max_clip_seconds]
        run_command(argv)
        return report_metrics(report_json)


def normalize_step(
    data: str, output: str, loudness: float, peak: float, max_clip_seconds: float
) -> dict[str, float]:
    """`fish-speech normalize DATA OUTPUT --loudness L --peak P`; the summary's numbers."""
    with tempfile.TemporaryDirectory(prefix="normalize-") as tmp:
        summary = Path(tmp) / "summary.json"
        argv = ["normalize", data, output, "--loudness", loudness, "--peak", peak]
        argv += ["--max-seconds", max_clip_seconds, "--num-workers", cpu_workers(8), "--json", summary]
        run_command(argv)
        return report_metrics(summary)
