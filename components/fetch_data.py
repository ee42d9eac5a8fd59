"""content-hash and fetch-data: the raw clips as a Dataset, cached on their content.

KFP's cache key covers a task's parameters and the *identity* of its input artifacts, so a step that
consumed a freshly fetched artifact would never hit the cache, and a fetch step cached on the source URL
alone would serve stale clips. Hence two steps: `content-hash` (never cached) syncs the clips into a
mirror on the workspace volume (only new or changed files are downloaded) and returns the sha256 of their
manifest of file checksums; `fetch-data` is cached on (source, hash) and copies the mirror into its
artifact, so a rerun on unchanged clips reuses its artifact, and with it every downstream data step's
cache entry. Without a mirror folder (`mirror_root` empty) content-hash downloads into a temporary
folder and fetch-data downloads again from the source.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def content_hash(source: str, mirror_root: str) -> str:
    """The content hash of the clips at `source` (gs://, s3://, or a path on the mounted PVC)."""
    import hashlib
    import json
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main

    def fetch(dest: Path, hash_file: Path) -> str:
        argv = ["fetch-data", source, "--output", str(dest), "--hash-file", str(hash_file)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        text = hash_file.read_text(encoding="utf-8").strip()
        if text.startswith("{"):  # a JSON record: take its hash
            record = json.loads(text)
            text = str(record.get("content_hash") or record.get("hash") or record["sha256"])
        return text

    with tempfile.TemporaryDirectory(prefix="content-hash-") as tmp:
        if mirror_root:
            dest = Path(mirror_root) / "sources" / hashlib.sha256(source.encode()).hexdigest()[:16]
        else:
            dest = Path(tmp) / "data"
        digest = fetch(dest, Path(tmp) / "hash")
    print(f"content hash of {source}: {digest}" + (f" (mirror {dest})" if mirror_root else ""))
    return digest


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_data(source: str, content_hash: str, mirror_root: str, data: Output[Dataset]):
    """`fish-speech fetch-data MIRROR|SOURCE --output DATA`; fails unless the files hash to `content_hash`."""
    import hashlib
    import json
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main

    origin = source
    if mirror_root:
        mirror = Path(mirror_root) / "sources" / hashlib.sha256(source.encode()).hexdigest()[:16]
        if mirror.is_dir():
            origin = str(mirror)
    with tempfile.TemporaryDirectory(prefix="fetch-data-") as tmp:
        hash_file = Path(tmp) / "hash"
        argv = ["fetch-data", origin, "--output", data.path, "--hash-file", str(hash_file)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        text = hash_file.read_text(encoding="utf-8").strip()
    if text.startswith("{"):
        record = json.loads(text)
        text = str(record.get("content_hash") or record.get("hash") or record["sha256"])
    # This task's cache entry is keyed on `content_hash`: it must describe exactly these files.
    if text != content_hash:
        raise RuntimeError(
            f"the clips of {source} changed since content-hash ran (hash {text}, expected {content_hash}); "
            "rerun the pipeline"
        )
    data.metadata["source"] = source
    data.metadata["content_hash"] = content_hash
