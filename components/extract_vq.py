"""extract-vq, fanned out over shards: each shard's codes (`<stem>.npy`, same relative paths) as a Dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def plan_shards(num_shards: int) -> list[int]:
    """The shard indices 0..N-1 that `dsl.ParallelFor` fans extract-vq out over."""
    if num_shards < 1:
        raise ValueError(f"num_vq_shards must be at least 1, got {num_shards}")
    return list(range(num_shards))


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def extract_vq(
    data: Input[Dataset],
    weights: Input[Model],
    shard_index: int,
    num_shards: int,
    content_hash: str,
    batch_size: int,
    precision: str,
    gpu_type: str,
    gpu_count: int,
    codes: Output[Dataset],
    metrics: Output[Metrics],
):
    """`fish-speech extract-vq DATA --checkpoint-path codec.pth --shard-index I --num-shards N`.

    The command writes `<stem>.npy` beside each clip; the input artifact is never written to: the clips
    are hard-linked (or copied) into a scratch tree, and only the new `.npy` files move to `codes`.
    `content_hash` and the accelerator settings are not read here: the first is part of the cache
    key, the others are the task's resource request (passing them keeps them in the loop's inputs).
    """
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main
    from fish_speech.reports import read_report_numbers

    source = Path(data.path)
    codec = Path(weights.path) / "codec.pth"
    if not codec.is_file():
        raise FileNotFoundError(f"{codec}: the base model has no codec.pth")
    shard_index, num_shards = int(shard_index), int(num_shards)
    workers = max(1, min(4, (os.cpu_count() or 1) - 1))
    out = Path(codes.path)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="extract-vq-") as tmp:
        scratch = Path(tmp) / source.name
        inputs = set()
        for path in source.rglob("*"):
            if path.is_file():
                rel = path.relative_to(source)
                inputs.add(rel)
                (scratch / rel).parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(path, scratch / rel)
                except OSError:  # another file system
                    shutil.copy2(path, scratch / rel)
        report = Path(tmp) / "report.json"
        argv = ["extract-vq", str(scratch), "--checkpoint-path", str(codec), "--batch-size", str(batch_size)]
        argv += ["--num-workers", str(workers), "--device", "auto", "--precision", precision]
        argv += ["--shard-index", str(shard_index), "--num-shards", str(num_shards), "--report", str(report)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        moved = 0
        for npy in sorted(scratch.rglob("*.npy")):
            rel = npy.relative_to(scratch)
            if rel not in inputs and not npy.name.startswith(".tmp-"):
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(npy), out / rel)
                moved += 1
        for key, value in read_report_numbers(report).items():
            metrics.log_metric(key, value)
    metrics.log_metric("codes_files", moved)
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")
    codes.metadata.update({"shard_index": shard_index, "num_shards": num_shards, "files": moved})
