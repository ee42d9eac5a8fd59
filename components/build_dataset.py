"""build-dataset: transcripts + every shard's codes packed into `*.protos`, as a Dataset."""

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
    """`fish-speech build-dataset --input DATA --codes SHARD... --output PROTOS` (fish_speech/steps/codes.py).

    `content_hash` is part of the cache key only.
    """
    from fish_speech.steps.codes import build_dataset_step
    from fish_speech.steps.common import log_metrics

    log_metrics(metrics, build_dataset_step(data.path, [shard.path for shard in codes], protos.path))
    protos.metadata["content_hash"] = content_hash
