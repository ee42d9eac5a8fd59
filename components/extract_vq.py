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
    accelerator_type: str,
    accelerator_count: int,
    codes: Output[Dataset],
    metrics: Output[Metrics],
):
    """`fish-speech extract-vq DATA --checkpoint-path codec.pth --shard-index I --num-shards N`.

    The command writes `<stem>.npy` beside each clip; the input artifact is never written to: the clips
    are linked into a scratch tree, and only the new `.npy` files move to `codes`.
    `content_hash` and the accelerator settings are not read here: the first is part of the cache
    key, the others are the task's resource request (passing them keeps them in the loop's inputs).
    """
    import json
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main

    def log_numbers(values: dict, prefix: str = "") -> None:
        for key, value in values.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, (int, float)):
                metrics.log_metric(prefix + key, value)
            elif isinstance(value, dict) and not prefix:
                log_numbers(value, prefix=f"{key}.")

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
        for path in source.rglob("*"):
            if path.is_file():
                link = scratch / path.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path.resolve())
        report = Path(tmp) / "report.json"
        argv = ["extract-vq", str(scratch), "--checkpoint-path", str(codec), "--batch-size", str(batch_size)]
        argv += ["--num-workers", str(workers), "--device", "auto"]
        argv += ["--shard-index", str(shard_index), "--num-shards", str(num_shards), "--report", str(report)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        moved = 0
        for npy in sorted(scratch.rglob("*.npy")):
            if not npy.is_symlink():
                target = out / npy.relative_to(scratch)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(npy), target)
                moved += 1
        log_numbers(json.loads(report.read_text(encoding="utf-8")))
    metrics.log_metric("codes_files", moved)
    codes.metadata.update({"shard_index": shard_index, "num_shards": num_shards, "files": moved})
