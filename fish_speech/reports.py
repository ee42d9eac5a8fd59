"""Step reports: writing them atomically, and reading their numbers back as flat metrics."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_write_text


def write_reports(outputs: Iterable[tuple[str | os.PathLike | None, Callable[[], str]]]) -> None:
    """Write each `(path, render)` pair whose path is set, atomically; an unwritable path is a UserError."""
    for path, render in outputs:
        if path is None:
            continue
        try:
            atomic_write_text(path, render())
        except OSError as e:
            raise UserError(f"{path}: cannot write report ({e.strerror or e})") from e


def report_numbers(values: dict, prefix: str = "", depth: int = 0) -> dict[str, float]:
    """The numbers of a JSON report as flat metric names: the top level and one level down.

    Keys under "summary" keep their own names, other nested keys are prefixed with their parent's;
    "options" (the step's inputs) and lists are left out; booleans count as 0/1.
    """
    numbers: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)):
            numbers[prefix + key] = value
        elif isinstance(value, dict) and depth == 0 and key != "options":
            numbers.update(report_numbers(value, "" if key == "summary" else f"{key}.", 1))
    return numbers


def read_report_numbers(path: str | os.PathLike) -> dict[str, float]:
    """`report_numbers` of a JSON report file."""
    return report_numbers(json.loads(Path(path).read_text(encoding="utf-8")))


def fmt(value: object, digits: int = 5) -> str:
    """A number for people: `digits` significant digits (17.803, not 17.80265235900879); None -> "-"."""
    if value is None:
        return "-"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return f"{value:.{digits}g}"
