"""What every step shares: run a `fish-speech` command, read its report back as metrics, log them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fish_speech.fileio import atomic_write_text, is_temp_file
from fish_speech.reports import read_report_numbers


class StepError(RuntimeError):
    """A step's command failed or left unusable output (the component fails with this message)."""


def run_command(argv: list[str]) -> None:
    """Run `fish-speech ARGV` in this process; raise `StepError` on a non-zero exit status.

    The error names the command's own one-line reason when it printed one (what a run's status report
    shows for the failed step), else the command line and its status.
    """
    from fish_speech import cli

    status = cli.main([str(a) for a in argv])
    if status != 0:
        command = f"fish-speech {' '.join(map(str, argv))} exited with status {status}"
        raise StepError(f"{cli.last_error} [{command}]" if cli.last_error else command)


def report_metrics(path: str | os.PathLike) -> dict[str, float]:
    """The numbers of a step's JSON report, as flat metric names (see `reports.report_numbers`)."""
    return read_report_numbers(path)


def log_metrics(metrics: Any, values: dict[str, float]) -> None:
    """Log `values` on a KFP `Metrics` artifact and write them to its file too.

    Duck-typed (`log_metric`, `metadata`, `path`), so this module needs no KFP. The file makes the
    numbers downloadable from the UI, and kfp.local's cache needs a file per artifact.
    """
    for key, value in values.items():
        metrics.log_metric(key, value)
    atomic_write_text(metrics.path, json.dumps(metrics.metadata, indent=2, sort_keys=True))


def count_files(root: str | os.PathLike, pattern: str) -> int:
    """Finished files matching `pattern` below `root` (temporary files not counted)."""
    return sum(1 for p in Path(root).rglob(pattern) if p.is_file() and not is_temp_file(p))


def cpu_workers(cap: int | None = None, reserve: int = 0) -> int:
    """Worker processes for a step: the CPUs less `reserve`, at most `cap` (if given), at least 1."""
    cpus = (os.cpu_count() or 1) - reserve
    return max(1, min(cap, cpus) if cap is not None else cpus)
