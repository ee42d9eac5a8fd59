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
LOW_SPEAKER_MINUTES = 1.0  # a speaker with less usable audio than this gets a warning in the report
# chars/second outliers: a clip whose rate is off its speaker's median by this factor (either way)
# usually has the wrong transcript (another clip's, a truncated one, or one for a longer recording)
RATE_OUTLIER_FACTOR = 1.8
RATE_MIN_CLIPS = 5  # fewer clips than this: no median to compare against
TRANSCRIPT_SHOWN = 80  # characters of each transcript in the Markdown table (JSON has all of it)
DURATION_BINS = (1, 2, 5, 10, 20, 30, 60, 120)  # seconds: upper edges of the histogram's bins

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
    text: str | None = None  # the transcript, stripped
    warnings: list[str] = field(default_factory=list)
    clip: Clip | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def chars_per_second(self) -> float | None:
        """Transcript characters per second of audio (speech is roughly 10-20 for English)."""
        if not self.text_chars or not self.duration:
            return None
        return self.text_chars / self.duration

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("clip")
        cps = self.chars_per_second
        d["chars_per_second"] = None if cps is None else round(cps, 2)
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
        r.text = text.strip()
        r.text_chars = len(r.text)
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
    source: str | None = None  # where the clips came from, when `data_dir` is a copy (a pipeline artifact)

    @property
    def shown_source(self) -> str:
        return self.source or self.data_dir

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

    def rate_outliers(self) -> dict[str, str]:
        """Usable clips whose characters per second are far off their speaker's median: path -> note.

        The median is the speaker's when it has `RATE_MIN_CLIPS` usable clips, else that of all
        usable clips (when there are that many); otherwise nothing is flagged.
        """
        rates = {c.path: c.chars_per_second for c in self.ok_clips if c.chars_per_second}
        by_speaker: dict[str, list[float]] = {}
        for c in self.ok_clips:
            if c.path in rates:
                by_speaker.setdefault(c.speaker, []).append(rates[c.path])
        everyone = sorted(rates.values())
        out: dict[str, str] = {}
        for c in self.ok_clips:
            rate = rates.get(c.path)
            own = by_speaker.get(c.speaker, [])
            pool = own if len(own) >= RATE_MIN_CLIPS else everyone
            if rate is None or len(pool) < RATE_MIN_CLIPS:
                continue
            median = _median(pool)
            if rate > median * RATE_OUTLIER_FACTOR or rate < median / RATE_OUTLIER_FACTOR:
                whose = "the speaker's" if pool is own else "all clips'"
                out[c.path] = (
                    f"{rate:.1f} chars/s vs {whose} median {median:.1f}: check the transcript matches the audio"
                )
        return out

    def warnings(self) -> list[str]:
        """Folder-level warnings: speakers with little usable audio, clips at the top level."""
        out = []
        for name, sp in self.speakers().items():
            if sp["minutes_ok"] < LOW_SPEAKER_MINUTES:
                out.append(
                    f"speaker `{name}`: only {60 * sp['minutes_ok']:.0f} s of usable audio in {sp['ok']} clip(s) "
                    f"(under {LOW_SPEAKER_MINUTES:g} min): training sees very little of this voice"
                )
        top = [c for c in self.clips if c.speaker == "."]
        if top:
            out.append(
                f"{len(top)} clip(s) sit directly in the data folder, listed as speaker `.`: training treats "
                "them as one speaker named after the folder. Put each speaker's clips in a subfolder "
                "(DATA/SPEAKER/clip.wav) to keep voices apart"
            )
        return out

    def duration_histogram(self) -> list[tuple[str, int, float]]:
        """(bin label, usable clips, usable minutes) per duration bin of `DURATION_BINS`."""
        edges = (0, *DURATION_BINS)
        rows = []
        for i, low in enumerate(edges):
            high = edges[i + 1] if i + 1 < len(edges) else None
            inside = [
                c.duration
                for c in self.ok_clips
                if c.duration is not None and c.duration >= low and (high is None or c.duration < high)
            ]
            label = f"{low}–{high} s" if high is not None else f"≥ {low} s"
            rows.append((label, len(inside), sum(inside) / 60.0))
        while rows and rows[-1][1] == 0:  # no empty bins past the longest clip or before the shortest
            rows.pop()
        while rows and rows[0][1] == 0:
            rows.pop(0)
        return rows

    def to_dict(self) -> dict[str, Any]:
        outliers = self.rate_outliers()
        clips = []
        for c in self.clips:
            d = c.to_dict()
            d["rate_outlier"] = c.path in outliers
            clips.append(d)
        return {
            "data_dir": self.data_dir,
            "source": self.shown_source,
            "max_seconds": self.max_seconds,
            "summary": self.summary(),
            "reasons": self.reason_counts(),
            "speakers": self.speakers(),
            "warnings": self.warnings(),
            "duration_histogram": [
                {"bin": label, "clips": n, "minutes": round(m, 3)}
                for label, n, m in self.duration_histogram()
            ],
            "clips": clips,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def to_markdown(self) -> str:
        s = self.summary()
        lines = [
            "# Data validation report",
            "",
            f"`{self.shown_source}`: {s['clips']} clips, **{s['ok']} ok**, {s['skipped']} skipped; "
            f"{s['minutes_ok']:.2f} usable minutes from {s['speakers']} speaker(s).",
        ]
        warnings = self.warnings()
        outliers = self.rate_outliers()
        if outliers:
            warnings.append(
                f"{len(outliers)} clip(s) with an unusual number of transcript characters per second "
                "(flagged in the table below): likely a wrong or incomplete transcript"
            )
        if warnings:
            lines += ["", "## Warnings", ""] + [f"- {_md(w)}" for w in warnings]
        lines += [
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
        histogram = self.duration_histogram()
        if histogram:
            widest = max(n for _, n, _ in histogram) or 1
            lines += [
                "",
                "## Durations of the usable clips",
                "",
                "| duration | clips | minutes | |",
                "|---|---:|---:|---|",
            ]
            lines += [
                f"| {label} | {n} | {m:.2f} | {'█' * max(1, round(20 * n / widest)) if n else ''} |"
                for label, n, m in histogram
            ]
        lines += [
            "",
            "## Clips",
            "",
            "| clip | status | duration (s) | chars/s | transcript | rate (Hz) | channels | peak (dBFS) "
            "| clipping (%) | notes |",
            "|---|---|---:|---:|---|---:|---:|---:|---:|---|",
        ]
        for c in self.clips:
            status = "ok" if c.ok else f"skipped: `{c.reason}`"
            notes = ([c.detail] if c.detail else []) + c.warnings
            cps = _num(c.chars_per_second, ".1f")
            if c.path in outliers:
                cps = f"**{cps}** ⚠"
                notes.append(outliers[c.path])
            text = c.text or ""
            if len(text) > TRANSCRIPT_SHOWN:
                text = text[: TRANSCRIPT_SHOWN - 1] + "…"
            lines.append(
                f"| {_md(c.path)} | {status} | {_num(c.duration, '.2f')} | {cps} | {_md(text)} | "
                f"{_num(c.sample_rate, 'd')} | {_num(c.channels, 'd')} | {_num(c.peak_dbfs, '.1f')} | "
                f"{_num(None if c.clipping is None else 100 * c.clipping, '.3f')} | {_md('; '.join(notes))} |"
            )
        return "\n".join(lines) + "\n"


def _median(values: list[float]) -> float:
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


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
    source: str | None = None,
) -> Report:
    """Validate every clip under `data_dir` (decoding each file fully, in `num_workers` processes).

    `max_seconds` None or <= 0 means no length limit. `source` is what the report names as the
    data (e.g. the bucket the pipeline fetched `data_dir` from). Raises `UserError` when the folder
    is missing or holds no audio file at all.
    """
    max_seconds = length_limit(max_seconds)
    clips = find_clips_or_fail(data_dir)
    results = map_in_workers(
        _validate_star, [(c, max_seconds) for c in clips], num_workers, "validate", progress=progress
    )
    report = Report(os.fspath(data_dir), max_seconds, results, source=source)
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
