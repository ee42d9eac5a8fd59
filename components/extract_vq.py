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
    """`fish-speech extract-vq DATA --output-dir CODES` for one shard (fish_speech/steps/codes.py).

    `content_hash` is part of the cache key. `gpu_type`/`gpu_count` are the task's resource request,
    passed so that KFP adds them to the ParallelFor's inputs (a channel used only in `set_accelerator_*`
    is not)."""
    from fish_speech.steps.codes import extract_vq_step
    from fish_speech.steps.common import log_metrics

    values = extract_vq_step(
        data.path, weights.path, codes.path, shard_index, num_shards, batch_size, precision
    )
    log_metrics(metrics, values)
    codes.metadata.update(
        {"shard_index": shard_index, "num_shards": num_shards, "files": values["codes_files"]}
    )
