"""build-dataset: transcripts + the shards' collected codes packed into `*.protos`, as a Dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def build_dataset(
    data: Input[Dataset],
    codes: Input[list[Dataset]],
    content_hash: str,
    protos: Output[Dataset],
    metrics: Output[Metrics],
):
    """`fish-speech build-dataset --input TREE --output PROTOS --text-extension .lab`.

    TREE holds a copy of each `.lab` of `data` and each shard's `.npy` at their common relative paths
    (small files; build-dataset reads no audio), the layout upstream's recipe has after extract-vq.
    `content_hash` is part of the cache key only.
    """
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main
    from fish_speech.reports import read_report_numbers

    source = Path(data.path)
    with tempfile.TemporaryDirectory(prefix="build-dataset-") as tmp:
        # named like the data folder: build-dataset names a group after its folder
        tree = Path(tmp) / source.name
        for lab in source.rglob("*.lab"):
            copy = tree / lab.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(lab, copy)
        owner: dict[Path, str] = {}
        for shard in codes:
            root = Path(shard.path)
            for npy in root.rglob("*.npy"):
                rel = npy.relative_to(root)
                if rel in owner:
                    raise RuntimeError(f"{rel} was extracted by two shards ({owner[rel]} and {root})")
                owner[rel] = str(root)
                (tree / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(npy, tree / rel)
        if not owner:
            raise RuntimeError("extract-vq produced no codes in any shard: nothing to train on")
        report = Path(tmp) / "report.json"
        workers = str(max(1, os.cpu_count() or 1))
        argv = ["build-dataset", "--input", str(tree), "--output", protos.path, "--text-extension", ".lab"]
        argv += ["--num-workers", workers, "--report", str(report)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        for key, value in read_report_numbers(report).items():
            metrics.log_metric(key, value)
    metrics.log_metric("codes_files", len(owner))
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")
    protos.metadata["content_hash"] = content_hash
