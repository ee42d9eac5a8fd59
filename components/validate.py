"""validate: a report of every clip (ok / why skipped) as Markdown, and clip counts and minutes as Metrics."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def validate(
    data: Input[Dataset],
    content_hash: str,
    max_clip_seconds: float,
    report: Output[Markdown],
    metrics: Output[Metrics],
):
    """`fish-speech validate DATA --report REPORT.md [--max-seconds S]` (fish_speech/steps/data.py).

    `content_hash` is not read: it is part of the cache key (see fish_speech/steps/data.py).
    """
    from fish_speech.steps.common import log_metrics
    from fish_speech.steps.data import validate_step

    # the user's bucket or folder (fetch-data records it), not the artifact's path, names the data
    source = data.metadata.get("source")
    log_metrics(metrics, validate_step(data.path, report.path, max_clip_seconds, source=source))
