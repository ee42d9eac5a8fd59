"""Check every clip of a data folder: ok, or skipped with a reason. Normalize reuses the checks.

The checks need numpy and soundfile only (no torch), so `fish-speech validate` starts fast.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fish_speech.audio import AudioInfo, AudioReadError, ResampleError, audio_stats, check_resample_rates
from fish_speech.codec.options import SAMPLE_RATE
from fish_speech.dataset.discover import (
    BROKEN_SYMLINK,
    DUPLICATE_STEM,
    SYMLINK_FOLDER,
    SYMLINK_OUTSIDE,
    Clip,
    find_clips,
)
from fish_speech.errors import UserError
from fish_speech.parallel import map_in_workers
from fish_speech.reports import write_reports

log = logging.getLogger(__name__)

MIN_SECONDS = 0.4  # pyloudnorm's 400 ms gating block: fap loudness-norm fails on anything shorter
# The d3df505 codec encoder accepts at most 8,388,608 samples at 44.1 kHz (its RoPE table).
DEFAULT_MAX_SECONDS = 190.0
SILENCE_DBFS = -60.0
MAX_LAB_BYTES = 64 * 1024  # a transcript for a clip of a few minutes is a few KB
CLIPPING_WARN_SHARE = 0.001

# Skip reason codes -> what they mean (the report's legend, and the README's table).
REASONS: dict[str, str] = {
    SYMLINK_OUTSIDE: "a symlink leads outside the data folder (not followed)",
    SYMLINK_FOLDER: "a symlinked folder inside the data folder (not followed, it would duplicate clips)",
    BROKEN_SYMLINK: "a symlink whose target is missing (or a symlink loop)",
    DUPLICATE_STEM: "two audio files share a stem in one folder (they would share the .lab and outputs)",
    "no_lab": "no .lab transcript beside the audio",
    "empty_lab": "the .lab transcript is empty or only whitespace",
    "lab_not_utf8": "the .lab transcript is not valid UTF-8",
    "lab_too_large": f"the .lab transcript is larger than {MAX_LAB_BYTES // 1024} KiB",
    "unreadable": "the audio cannot be decoded (corrupt, truncated or unsupported format)",
    "zero_length": "the audio has no samples",
    "non_finite": "the audio holds NaN or infinite samples",
    "sample_rate": "the sample rate cannot be resampled to 44.1 kHz sensibly",
    "too_short": f"shorter than {MIN_SECONDS} s (loudness needs one 400 ms block)",
    "too_long": "longer than --max-seconds",
    "silent": f"silent: peak below {SILENCE_DBFS:g} dBFS",
}


@dataclass
class ClipResult:
    """Validation outcome of one clip; `reason` is a key of `REASONS` when skipped."""

    path: str  # relative to the data folder (POSIX)
    speaker: str
    status: str  # "ok" or "skipped"
    reason: str | None = None
    detail: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    peak_dbfs: float | None = None
    clipping: float | None = None  # share of samples at full scale
    text_chars: int | None = None
    warnings: list[str] = field(default_factory=list)
    clip: Clip | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("clip")
        if d["peak_dbfs"] is not None and math.isinf(d["peak_dbfs"]):
            d["peak_dbfs"] = None  # JSON has no -inf; a None peak with a duration means all zeros
        return d


def _read_lab(lab: Path) -> tuple[str | None, str | None, str | None]:
    """(text, reason, detail) for a transcript file."""
    if not lab.is_file():
        return None, "no_lab", f"no transcript {lab.name} beside the audio"
    size = lab.stat().st_size
    if size > MAX_LAB_BYTES:
        return None, "lab_too_large", f"transcript {lab.name} is {size} bytes (limit {MAX_LAB_BYTES})"
    try:
        text = lab.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        return None, "lab_not_utf8", f"transcript {lab.name} is not UTF-8 (byte {e.start})"
    except OSError as e:
        return None, "no_lab", f"transcript {lab.name} cannot be read ({e.strerror})"
    if not text.strip():
        return None, "empty_lab", f"transcript {lab.name} is empty"
    return text, None, None


def validate_clip(
    clip: Clip, max_seconds: float | None = DEFAULT_MAX_SECONDS, info: AudioInfo | None = None
) -> ClipResult:
    """Check one clip: transcript, decodability, length, level. Never raises for a bad file.

    `info` is the clip's `audio_stats` when the caller has already decoded it (normalize decodes
    each clip once); without it the file is decoded here.
    """
    r = ClipResult(clip.rel, clip.speaker, "ok", clip=clip)
    if clip.problem:
        r.status, r.reason, r.detail = "skipped", clip.problem, clip.detail
        return r
    reasons: list[tuple[str, str]] = []
    assert clip.lab is not None
    text, lab_reason, lab_detail = _read_lab(clip.lab)
    if lab_reason:
        reasons.append((lab_reason, lab_detail))
    else:
        r.text_chars = len(text.strip())
    if info is None:
        try:
            info = audio_stats(clip.audio)
        except AudioReadError as e:
            reasons.insert(0, ("unreadable", f"cannot read audio ({e.reason})"))
    if info is not None:
        r.duration = round(info.duration, 4)
        r.sample_rate, r.channels = info.sample_rate, info.channels
        r.peak_dbfs = round(info.peak_dbfs, 2) if info.peak > 0 else -math.inf
        r.clipping = round(info.clipping_share, 6)
        if info.frames == 0:
            reasons.append(("zero_length", "the audio has no samples"))
        elif info.non_finite:
            reasons.append(("non_finite", f"{info.non_finite} NaN or infinite samples"))
        else:
            try:
                check_resample_rates(info.sample_rate, SAMPLE_RATE)
            except ResampleError as e:
                reasons.append(("sample_rate", str(e)))
            if info.frames < MIN_SECONDS * info.sample_rate:
                reasons.append(("too_short", f"{info.duration:.3f} s is shorter than {MIN_SECONDS} s"))
            if max_seconds is not None and info.duration > max_seconds:
                reasons.append(("too_long", f"{info.duration:.1f} s is longer than {max_seconds:g} s"))
            if info.peak_dbfs < SILENCE_DBFS:
                peak = "all zeros" if info.peak == 0 else f"peak {info.peak_dbfs:.1f} dBFS"
                reasons.append(("silent", peak))  # printed after the reason code: "silent: all zeros"
        if info.clipping_share > CLIPPING_WARN_SHARE:
            r.warnings.append(f"clipping: {100 * info.clipping_share:.2f} % of samples at full scale")
        if info.channels > 2:
            r.warnings.append(f"{info.channels} channels (mixed down to mono for the codec)")
    if reasons:
        r.status, (r.reason, r.detail) = "skipped", reasons[0]
        if len(reasons) > 1:
            r.detail += "; also: " + "; ".join(d for _, d in reasons[1:])
    return r


def _validate_star(args: tuple[Clip, float | None]) -> ClipResult:
    return validate_clip(*args)


@dataclass
class Report:
    """Per-clip results for one data folder, with per-speaker and per-reason summaries."""

    data_dir: str
    max_seconds: float | None
    clips: list[ClipResult]

    @property
    def ok_clips(self) -> list[ClipResult]:
        return [c for c in self.clips if c.ok]

    @property
    def usable(self) -> bool:
        return any(c.ok for c in self.clips)

    def by_path(self) -> dict[str, ClipResult]:
        return {c.path: c for c in self.clips}

    def reason_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(c.reason for c in self.clips if not c.ok).items()))

    def speakers(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for c in self.clips:
            s = out.setdefault(
                c.speaker, {"clips": 0, "ok": 0, "skipped": 0, "minutes": 0.0, "minutes_ok": 0.0}
            )
            s["clips"] += 1
            s["ok" if c.ok else "skipped"] += 1
            minutes = (c.duration or 0.0) / 60.0
            s["minutes"] += minutes
            if c.ok:
                s["minutes_ok"] += minutes
        for s in out.values():
            s["minutes"], s["minutes_ok"] = round(s["minutes"], 3), round(s["minutes_ok"], 3)
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, Any]:
        ok = self.ok_clips
        return {
            "clips": len(self.clips),
            "ok": len(ok),
            "skipped": len(self.clips) - len(ok),
            "speakers": len({c.speaker for c in ok}),
            "minutes_ok": round(sum(c.duration or 0.0 for c in ok) / 60.0, 3),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "data_dir": self.data_dir,
            "max_seconds": self.max_seconds,
            "summary": self.summary(),
            "reasons": self.reason_counts(),
            "speakers": self.speakers(),
            "clips": [c.to_dict() for c in self.clips],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        s = self.summary()
        lines = [
            "# Data validation report",
            "",
            f"`{self.data_dir}`: {s['clips']} clips, **{s['ok']} ok**, {s['skipped']} skipped; "
            f"{s['minutes_ok']:.2f} usable minutes from {s['speakers']} speaker(s).",
            "",
            "## Speakers",
            "",
            "| speaker | clips | ok | skipped | minutes | usable minutes |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, sp in self.speakers().items():
            lines.append(
                f"| {_md(name)} | {sp['clips']} | {sp['ok']} | {sp['skipped']} | "
                f"{sp['minutes']:.2f} | {sp['minutes_ok']:.2f} |"
            )
        counts = self.reason_counts()
        if counts:
            lines += ["", "## Skip reasons", "", "| reason | clips | meaning |", "|---|---:|---|"]
            lines += [f"| `{r}` | {n} | {REASONS.get(r, '')} |" for r, n in counts.items()]
        lines += [
            "",
            "## Clips",
            "",
            "| clip | status | duration (s) | rate (Hz) | channels | peak (dBFS) | clipping (%) | notes |",
            "|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in self.clips:
            status = "ok" if c.ok else f"skipped: `{c.reason}`"
            notes = "; ".join(([c.detail] if c.detail else []) + c.warnings)
            lines.append(
                f"| {_md(c.path)} | {status} | {_num(c.duration, '.2f')} | {_num(c.sample_rate, 'd')} | "
                f"{_num(c.channels, 'd')} | {_num(c.peak_dbfs, '.1f')} | "
                f"{_num(None if c.clipping is None else 100 * c.clipping, '.3f')} | {_md(notes)} |"
            )
        return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(x: float | int | None, fmt: str) -> str:
    if x is None:
        return ""
    if isinstance(x, float) and math.isinf(x):
        return "-inf"
    return format(x, fmt)


def validate_dir(
    data_dir: str | os.PathLike,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    num_workers: int = 1,
    progress: bool = True,
) -> Report:
    """Validate every clip under `data_dir` (decoding each file fully, in `num_workers` processes).

    `max_seconds` None or <= 0 means no length limit. Raises `UserError` when the folder is
    missing or holds no audio file at all.
    """
    max_seconds = length_limit(max_seconds)
    clips = find_clips_or_fail(data_dir)
    results = map_in_workers(
        _validate_star, [(c, max_seconds) for c in clips], num_workers, "validate", progress=progress
    )
    report = Report(os.fspath(data_dir), max_seconds, results)
    for r in results:
        if not r.ok:
            log.info("skip %s: %s", r.path, r.detail)
    return report


def length_limit(max_seconds: float | None) -> float | None:
    """`--max-seconds` as a limit: None or <= 0 means no limit (None)."""
    return None if max_seconds is None or max_seconds <= 0 else max_seconds


def find_clips_or_fail(data_dir: str | os.PathLike) -> list[Clip]:
    """`find_clips`, raising `UserError` when the folder holds no audio file at all."""
    clips = find_clips(data_dir)
    if not clips:
        raise UserError(
            f"{data_dir}: no audio files found (looked for .wav, .flac, .mp3, .ogg, ... recursively)"
        )
    return clips


def write_report(
    report: Report, json_path: str | os.PathLike | None, markdown: str | os.PathLike | None
) -> None:
    """Write the JSON and/or Markdown report atomically (parent folders are created)."""
    write_reports(((json_path, report.to_json), (markdown, report.to_markdown)))
