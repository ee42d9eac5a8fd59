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
    """`fish-speech validate DATA --report REPORT.md --json R.json [--max-seconds S]`.

    `content_hash` is not read: it is part of the cache key (see components/fetch_data.py).
    """
    import json
    import tempfile
    from pathlib import Path

    from fish_speech.cli import main
    from fish_speech.reports import read_report_numbers

    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        report_json = Path(tmp) / "report.json"
        argv = ["validate", data.path, "--report", report.path, "--json", str(report_json)]
        if max_clip_seconds > 0:
            argv += ["--max-seconds", str(max_clip_seconds)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        for key, value in read_report_numbers(report_json).items():
            metrics.log_metric(key, value)
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")
