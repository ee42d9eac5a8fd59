"""Loudness normalisation with the numbers of `fap loudness-norm` (fish-audio-preprocess 0.2.8).

Per clip: decode to float64, peak-normalise to `peak` dBFS, measure the ITU-R BS.1770-4 integrated
loudness with 400 ms gating blocks (pyloudnorm), scale to `loudness` LUFS, and write a 16-bit PCM
WAV (soundfile's default, as fap) under the same relative path, with the `.lab` copied beside it.

Unlike fap, clips that `validate` skips are reported and not written: fap turns a silent clip into
a full-scale DC file (0/0 gain) and stops with an error on a clip shorter than one 400 ms block.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from fish_speech.audio import array_stats
from fish_speech.dataset.discover import Clip
from fish_speech.dataset.validate import (
    DEFAULT_MAX_SECONDS,
    ClipResult,
    Report,
    find_clips_or_fail,
    length_limit,
    validate_clip,
)
from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path, atomic_write_bytes, check_separate
from fish_speech.options import option
from fish_speech.parallel import map_in_workers
from fish_speech.reports import write_reports

log = logging.getLogger(__name__)

MAX_LOUDNESS_CHANNELS = 5  # BS.1770 channel weights in pyloudnorm cover L, R, C, Ls, Rs


@dataclass(frozen=True)
class Settings:
    """Targets of the normalisation (fap loudness-norm defaults)."""

    loudness: float = option(-23.0, "target integrated loudness, LUFS")
    peak: float = option(-1.0, "peak level before loudness scaling, dBFS")
    block_size: float = option(0.4, "loudness gating block, seconds (BS.1770-4)")


def loudness_normalize(
    data: np.ndarray, sr: int, settings: Settings = Settings()
) -> tuple[np.ndarray, float]:
    """Peak-normalise then loudness-normalise `data` (samples,) or (samples, channels), float64.

    Returns (normalised data, integrated loudness in LUFS measured after peak normalisation).
    The arithmetic is pyloudnorm's `normalize.peak`, `Meter.integrated_loudness` and
    `normalize.loudness`, in that order, as fap does.
    """
    import pyloudnorm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyloudnorm warns on |x| >= 1; clipping is counted by the caller
        peaked = pyloudnorm.normalize.peak(data, settings.peak)
        measured = pyloudnorm.Meter(sr, block_size=settings.block_size).integrated_loudness(peaked)
        out = pyloudnorm.normalize.loudness(peaked, measured, settings.loudness)
    return out, float(measured)


@dataclass
class ClipOutcome:
    """What normalize did with one clip."""

    path: str  # relative to the input folder
    status: str  # "written", "kept" (finished earlier), or "skipped"
    reason: str | None = None
    detail: str | None = None
    output: str | None = None  # relative to the output folder
    measured_lufs: float | None = None  # after peak normalisation
    gain_db: float | None = None  # total gain applied
    clipped: int | None = None  # output samples that hit full scale in the 16-bit file


def _finished(src: Path, src_lab: Path, dst: Path, dst_lab: Path) -> bool:
    """Outputs exist, are not older than the input, and the transcript is identical."""
    try:
        if dst.stat().st_mtime < src.stat().st_mtime:
            return False
        return dst_lab.read_bytes() == src_lab.read_bytes()
    except OSError:
        return False


def normalize_clip(
    clip: Clip, dst: str, out_rel: str, settings: Settings, overwrite: bool, max_seconds: float | None
) -> tuple[ClipResult, ClipOutcome | None]:
    """Validate one clip and, if it is usable, normalise it into `dst` (+ `.lab`).

    The audio is decoded once for both jobs. Returns the validation result and the outcome (None
    when validation skipped the clip). Runs in a worker process; never raises for bad audio.
    """
    dst_p = Path(dst)
    if clip.problem is None and clip.lab is not None:
        if not overwrite and _finished(clip.audio, clip.lab, dst_p, dst_p.with_suffix(".lab")):
            result = validate_clip(clip, max_seconds)
            return result, ClipOutcome(clip.rel, "kept", output=out_rel) if result.ok else None
        data, sr = _decode(clip.audio, max_seconds)
        info = array_stats(data, sr) if data is not None else None
    else:
        data = info = None
    result = validate_clip(clip, max_seconds, info)  # decodes again (streaming) only if we could not
    if not result.ok:
        return result, None
    if data is None:  # not loaded above: its header over-stated the length (or the file changed)
        data, sr = _decode(clip.audio, None)
        if data is None:
            return result, ClipOutcome(
                clip.rel, "skipped", "unreadable", "the file changed while it was read"
            )
    return result, _normalize_audio(data, sr, clip, dst_p, out_rel, settings)


def _decode(path: Path, max_seconds: float | None) -> tuple[np.ndarray | None, int]:
    """The whole clip as float64 (fap: sf.read defaults, (N,) or (N, C)), or (None, 0) if it cannot
    be decoded or its header says it is over the length limit (then only a streaming check reads it)."""
    try:
        if max_seconds is not None:
            info = sf.info(os.fspath(path))
            if info.frames > (max_seconds + 1.0) * info.samplerate * 1.01:  # headers can be estimates
                return None, 0
        data, sr = sf.read(os.fspath(path), dtype="float64")
    except Exception:  # validate_clip decodes it again and names the problem
        return None, 0
    return data, int(sr)


def _normalize_audio(
    data: np.ndarray, sr: int, clip: Clip, dst: Path, out_rel: str, settings: Settings
) -> ClipOutcome:
    """Loudness-normalise decoded samples of a validated clip and write them atomically."""
    rel = clip.rel
    channels = 1 if data.ndim == 1 else data.shape[1]
    if channels > MAX_LOUDNESS_CHANNELS:
        return ClipOutcome(
            rel,
            "skipped",
            "too_many_channels",
            f"{channels} channels: BS.1770 loudness is defined for at most {MAX_LOUDNESS_CHANNELS}; "
            "mix it down to mono or stereo first",
        )
    try:
        out, measured = loudness_normalize(data, sr, settings)
    except ValueError as e:  # pyloudnorm's own input checks (length, channels)
        return ClipOutcome(rel, "skipped", "no_loudness", f"loudness cannot be measured ({e})")
    if not math.isfinite(measured) or not np.isfinite(out).all():
        return ClipOutcome(rel, "skipped", "no_loudness", "every 400 ms block is below the -70 LUFS gate")
    current_peak = float(np.max(np.abs(data)))
    outcome = ClipOutcome(rel, "written", output=out_rel, measured_lufs=round(measured, 4))
    outcome.gain_db = round(settings.peak - 20 * math.log10(current_peak) + settings.loudness - measured, 4)
    outcome.clipped = int(np.count_nonzero(np.abs(out) >= 1.0))
    try:
        with atomic_path(dst, suffix=".wav") as tmp:
            sf.write(tmp, out, sr, format="WAV", subtype="PCM_16")  # values beyond +-1 are clipped
        atomic_write_bytes(dst.with_suffix(".lab"), Path(clip.lab).read_bytes())
    except OSError as e:
        raise UserError(f"{dst}: cannot write ({e.strerror or e})") from e
    return outcome


def _normalize_star(args: tuple) -> tuple[ClipResult, ClipOutcome | None]:
    return normalize_clip(*args)


@dataclass
class NormalizeSummary:
    """Result of `normalize_dir`: the validation report and one outcome per clip."""

    input_dir: str
    output_dir: str
    settings: Settings
    validation: Report
    outcomes: list[ClipOutcome] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.status for o in self.outcomes))

    @property
    def usable(self) -> bool:
        return any(o.status in ("written", "kept") for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_dir": self.input_dir,
            "output_dir": self.output_dir,
            "settings": asdict(self.settings),
            "counts": self.counts(),
            "reasons": dict(sorted(Counter(o.reason for o in self.outcomes if o.reason).items())),
            "clips": [asdict(o) for o in self.outcomes],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"

    def format(self) -> str:
        c = self.counts()
        lines = [
            f"normalized {self.input_dir} -> {self.output_dir}: {c.get('written', 0)} written, "
            f"{c.get('kept', 0)} already done, {c.get('skipped', 0)} skipped"
        ]
        lines += [
            f"  skipped {o.path}: {o.reason}: {o.detail}" for o in self.outcomes if o.status == "skipped"
        ]
        clipped = [o for o in self.outcomes if o.clipped]
        if clipped:
            lines.append(f"  warning: {len(clipped)} clip(s) clipped at full scale after loudness gain")
        return "\n".join(lines)

    def to_markdown(self) -> str:
        c, st = self.counts(), self.settings
        lines = [
            "# Normalize report",
            "",
            f"`{self.input_dir}` -> `{self.output_dir}`: {c.get('written', 0)} written, "
            f"{c.get('kept', 0)} already done, {c.get('skipped', 0)} skipped. Targets: peak {st.peak:g} dBFS, "
            f"then {st.loudness:g} LUFS (BS.1770-4, {st.block_size:g} s blocks).",
            "",
            "| clip | status | output | loudness after peak norm (LUFS) | gain (dB) | clipped samples | notes |",
            "|---|---|---|---:|---:|---:|---|",
        ]
        for o in self.outcomes:
            status = o.status if o.status != "skipped" else f"skipped: `{o.reason}`"
            cells = [
                o.output or "",
                _fmt(o.measured_lufs),
                _fmt(o.gain_db),
                "" if o.clipped is None else str(o.clipped),
            ]
            lines.append(f"| {o.path} | {status} | " + " | ".join(cells) + f" | {o.detail or ''} |")
        return (
            "\n".join(lines) + "\n\n" + self.validation.to_markdown().replace("# Data", "## Input: data", 1)
        )


def _fmt(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}"


def _check_dirs(in_dir: Path, out_dir: Path) -> None:
    if not in_dir.is_dir():
        raise UserError(
            f"{in_dir}: input folder does not exist" if not in_dir.exists() else f"{in_dir}: not a folder"
        )
    check_separate(in_dir, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")


def _ensure_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".tmp-probe.", dir=out_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{out_dir}: output folder is not writable ({e.strerror or e})") from e


def _remove_stale(dst: Path) -> None:
    """Delete an earlier run's output for a clip that is now skipped, so later steps cannot use it."""
    for p in (dst, dst.with_suffix(".lab")):
        if p.is_file():
            log.info("removing stale output %s (its input is now skipped)", p)
            p.unlink()


def normalize_dir(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    settings: Settings = Settings(),
    clean: bool = False,
    overwrite: bool = False,
    num_workers: int = 1,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
    progress: bool = True,
) -> NormalizeSummary:
    """Validate `in_dir`, then loudness-normalise every usable clip into `out_dir` (same layout, WAV).

    `clean` deletes `out_dir` first; otherwise finished outputs are kept unless `overwrite`.
    Raises `UserError` for a missing/empty input, an output inside (or around) the input, or an
    output folder that cannot be written.
    """
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    _check_dirs(in_dir, out_dir)
    max_seconds = length_limit(max_seconds)
    clips = find_clips_or_fail(in_dir)
    if clean and out_dir.exists():
        log.info("--clean: removing %s", out_dir)
        shutil.rmtree(out_dir)
    _ensure_writable(out_dir)

    jobs = []
    for clip in clips:
        out_rel = Path(clip.rel).with_suffix(".wav").as_posix()
        jobs.append((clip, os.fspath(out_dir / out_rel), out_rel, settings, overwrite, max_seconds))
    done = map_in_workers(_normalize_star, jobs, num_workers, "normalize", progress=progress)

    report = Report(os.fspath(in_dir), max_seconds, [result for result, _ in done])
    summary = NormalizeSummary(os.fspath(in_dir), os.fspath(out_dir), settings, report)
    for (result, outcome), (clip, dst, *_) in zip(done, jobs, strict=True):
        if outcome is None:  # validation skipped it
            outcome = ClipOutcome(result.path, "skipped", result.reason, result.detail)
            if clip.lab is not None:  # a file, not a skipped folder entry
                _remove_stale(Path(dst))
        if outcome.status == "skipped":
            log.info("skip %s: %s", outcome.path, outcome.detail)
        summary.outcomes.append(outcome)
    summary.outcomes.sort(key=lambda o: o.path)
    return summary


def write_summary(
    summary: NormalizeSummary, json_path: str | os.PathLike | None, markdown: str | os.PathLike | None
) -> None:
    """Write the JSON and/or Markdown summary atomically."""
    write_reports(((json_path, summary.to_json), (markdown, summary.to_markdown)))
