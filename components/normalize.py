"""normalize: loudness-normalized 44.1 kHz mono wav + .lab, as a Dataset."""

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
    """`fish-speech normalize DATA NORMALIZED --loudness L --peak P --num-workers N`.

    `content_hash` is not read: it is part of the cache key (see components/fetch_data.py).
    """
    import json
    import os
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main
    from fish_speech.reports import read_report_numbers

    workers = str(min(8, os.cpu_count() or 1))
    argv = ["normalize", data.path, normalized.path, "--loudness", str(loudness), "--peak", str(peak)]
    argv += ["--max-seconds", str(max_clip_seconds), "--num-workers", workers]
    with tempfile.TemporaryDirectory(prefix="normalize-") as tmp:
        summary = Path(tmp) / "summary.json"
        status = main([*argv, "--json", str(summary)])
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        for key, value in read_report_numbers(summary).items():
            metrics.log_metric(key, value)
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")
    normalized.metadata["content_hash"] = content_hash
