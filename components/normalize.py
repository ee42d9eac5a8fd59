"""normalize: peak- then loudness-normalised wav + .lab (each clip keeps its rate and channels), as a Dataset."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def normalize(
    data: Input[Dataset],
    content_hash: str,
    loudness: float,
    peak: float,
    max_clip_seconds: float,
    normalized: Output[Dataset],
    metrics: Output[Metrics],
):
    """`fish-speech normalize DATA NORMALIZED --loudness L --peak P` (fish_speech/steps/data.py).

    `content_hash` is not read: it is part of the cache key (see fish_speech/steps/data.py).
    """
    from fish_speech.steps.common import log_metrics
    from fish_speech.steps.data import normalize_step

    log_metrics(metrics, normalize_step(data.path, normalized.path, loudness, peak, max_clip_seconds))
    normalized.metadata["content_hash"] = content_hash
