"""Clip discovery shared by validate, normalize and extract-vq.

Layout: `DATA_DIR/SPEAKER/clip.{wav,flac,mp3,...}` with `clip.lab` beside it. The speaker is the
folder holding the clip, relative to DATA_DIR ("." for clips directly in DATA_DIR).

Hidden files and folders (including the `.tmp-*` files of atomic writes) are ignored. Symlinked
folders are never followed (that would let one clip appear twice, or a loop); a symlinked file is
read only when it resolves inside DATA_DIR. Whatever is not followed is reported, not dropped.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from fish_speech.audio import AUDIO_EXTENSIONS
from fish_speech.errors import UserError
from fish_speech.fileio import is_temp_file

log = logging.getLogger(__name__)

# Discovery-level skip reasons (validate adds the per-file ones).
SYMLINK_OUTSIDE = "symlink_outside"
SYMLINK_FOLDER = "symlink_folder"
DUPLICATE_STEM = "duplicate_stem"
BROKEN_SYMLINK = "broken_symlink"


@dataclass(frozen=True)
class Clip:
    """One audio file found under DATA_DIR (or a symlinked folder that was not followed)."""

    audio: Path  # the path as found under DATA_DIR (not resolved)
    rel: str  # POSIX path relative to DATA_DIR, used in reports and for output paths
    speaker: str
    lab: Path | None  # the transcript expected beside it (None for a skipped folder entry)
    problem: str | None = None  # discovery skip reason code, or None
    detail: str | None = None  # human-readable explanation of `problem`


def _hidden(name: str) -> bool:
    return name.startswith(".") or is_temp_file(name)


def _is_inside(path: Path, root_real: Path) -> bool:
    try:
        real = path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return real == root_real or root_real in real.parents


def _resolves(path: Path) -> bool:
    """True when a symlink chain ends at an existing file (False for dangling links and loops)."""
    try:
        return path.resolve(strict=True).exists()
    except (OSError, RuntimeError):
        return False


def _check_root(root: str | os.PathLike) -> Path:
    root = Path(root)
    if not root.exists():
        raise UserError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise UserError(f"{root}: not a folder")
    return root


def _walk_audio(root: Path) -> tuple[list[Path], list[Path]]:
    """(audio files, symlinked folders) under root, both sorted; hidden entries skipped."""
    files: list[Path] = []
    linked_dirs: list[Path] = []

    def onerror(e: OSError) -> None:
        raise UserError(f"{e.filename}: cannot list folder ({e.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
        here = Path(dirpath)
        keep = []
        for d in dirnames:
            if _hidden(d):
                continue
            if (here / d).is_symlink():
                linked_dirs.append(here / d)
            else:
                keep.append(d)
        dirnames[:] = sorted(keep)
        for name in filenames:
            if not _hidden(name) and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                files.append(here / name)
    return sorted(files), sorted(linked_dirs)


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """Audio files under `root`, recursive and sorted; suffixes matched case-insensitively.

    Skips hidden files and folders (so `.tmp-*` files of interrupted writes), does not follow
    symlinked folders, and leaves out broken symlinks and symlinked files that resolve outside
    `root` (logged; `find_clips` reports them). Raises `UserError` when `root` is missing or not a folder.
    """
    root = _check_root(root)
    root_real = root.resolve()
    files, linked_dirs = _walk_audio(root)
    for d in linked_dirs:
        log.warning("%s: symlinked folder not followed", d)
    kept = []
    for f in files:
        if f.is_symlink() and not _resolves(f):
            log.warning("%s: broken symlink, skipped", f)
        elif f.is_symlink() and not _is_inside(f, root_real):
            log.warning("%s: symlink leads outside %s, skipped", f, root)
        else:
            kept.append(f)
    return kept


def _speaker(rel: PurePosixPath) -> str:
    return rel.parent.as_posix()


def find_clips(data_dir: str | os.PathLike) -> list[Clip]:
    """Every audio file under `data_dir` paired with its `.lab` and speaker, sorted by path.

    Clips that must not be used are returned with `problem` set instead of being dropped:
    symlinks leading outside `data_dir` (file or transcript), broken symlinks, symlinked folders
    (not followed), and files sharing a stem in one folder (`a.wav` + `a.mp3` would share `a.lab` and the
    outputs `a.wav`/`a.npy`).
    """
    root = _check_root(data_dir)
    root_real = root.resolve()
    files, linked_dirs = _walk_audio(root)

    by_stem: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    for f in files:
        by_stem[(f.parent, f.stem)].append(f)

    clips: list[Clip] = []
    for f in files:
        rel = PurePosixPath(f.relative_to(root).as_posix())
        lab = f.with_suffix(".lab")
        problem = detail = None
        if f.is_symlink() and not _resolves(f):
            problem, detail = BROKEN_SYMLINK, f"broken symlink (to {_target(f)}: missing, or a loop)"
        elif not _is_inside(f, root_real):
            problem, detail = SYMLINK_OUTSIDE, f"symlink leads outside the data folder (to {_target(f)})"
        elif lab.is_symlink() and not _is_inside(lab, root_real):
            problem, detail = (
                SYMLINK_OUTSIDE,
                f"transcript {lab.name} is a symlink leading outside the data folder",
            )
        elif len(twins := by_stem[(f.parent, f.stem)]) > 1:
            others = ", ".join(t.name for t in twins if t != f)
            problem, detail = (
                DUPLICATE_STEM,
                f"same stem as {others} in one folder (ambiguous transcript and outputs)",
            )
        clips.append(Clip(f, rel.as_posix(), _speaker(rel), lab, problem, detail))
    for d in linked_dirs:
        rel = PurePosixPath(d.relative_to(root).as_posix())
        if _is_inside(d, root_real):
            problem, detail = SYMLINK_FOLDER, f"symlinked folder (to {_target(d)}) not followed"
        else:
            problem, detail = (
                SYMLINK_OUTSIDE,
                f"symlinked folder leads outside the data folder (to {_target(d)})",
            )
        clips.append(Clip(d, rel.as_posix() + "/", _speaker(rel), None, problem, detail))
    clips.sort(key=lambda c: c.rel)
    return clips


def _target(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:
        return "?"
