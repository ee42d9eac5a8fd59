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

    def log_numbers(values: dict, prefix: str = "", depth: int = 0) -> None:
        """The numbers of a JSON report as metrics: top level and one level down ("summary" unprefixed)."""
        for key, value in values.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, (int, float)):
                metrics.log_metric(prefix + key, value)
            elif isinstance(value, dict) and depth == 0 and key != "options":  # options are inputs
                log_numbers(value, "" if key == "summary" else f"{key}.", 1)

    with tempfile.TemporaryDirectory(prefix="validate-") as tmp:
        report_json = Path(tmp) / "report.json"
        argv = ["validate", data.path, "--report", report.path, "--json", str(report_json)]
        if max_clip_seconds > 0:
            argv += ["--max-seconds", str(max_clip_seconds)]
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
        log_numbers(json.loads(report_json.read_text(encoding="utf-8")))
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")
