"""Pack clips (codes + transcripts) into the `*.protos` training stream, one record per group.

Follows upstream's `build_dataset` (`tools/llama/build_dataset.py`) so the same folder gives the same
bytes, with these deliberate differences, none of which changes the bytes for a valid folder:
- groups are written in discovery order whatever the number of workers (upstream's order is
  random with more than one worker);
- clips whose codes are not a 2-D integer array of the expected number of codebooks, or have no
  frames, are skipped with a reason instead of crashing the build or reaching training;
- every skipped clip (also a transcript or audio file without codes, which upstream ignores
  silently) is listed in the summary; a leading UTF-8 byte-order mark of a transcript is dropped;
- `.npy` files that are symbolic links out of the input folder are skipped.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

# Audio files only matter here to report clips that have no codes yet (extract-vq not run).
from fish_speech.audio import AUDIO_EXTENSIONS
from fish_speech.codec.options import SAMPLE_RATE, SAMPLES_PER_FRAME
from fish_speech.dataset.protos import Semantics, Sentence, TextData, write_protos
from fish_speech.errors import UserError
from fish_speech.fileio import atomic_write_text, is_temp_file
from fish_speech.parallel import imap_in_workers

log = logging.getLogger(__name__)

MIN_CLIPS_FOR_WORKERS = 256
FILELIST_LANGUAGES = {"zh": "zh", "jp": "jp", "ja": "jp", "en": "en"}

_BRACES = re.compile(r"\{.*?\}")
_ANGLES = re.compile(r"<.*?>")
_SPACES = re.compile(r"\s+")


def clean_build_text(text: str) -> str:
    """Build-time transcript cleaning: drop `{...}` and `<...>` spans, collapse whitespace runs.

    Each span becomes one space (spans never cross a line break); nothing is stripped, so
    `"  Line one,\\nline two.\\n"` becomes `" Line one, line two. "` as upstream stores it.
    """
    text = _BRACES.sub(" ", text)
    text = _ANGLES.sub(" ", text)
    return _SPACES.sub(" ", text)


@dataclass
class PackClip:
    """One clip to pack: its codes file and its cleaned transcript(s), one per text extension."""

    codes: Path
    texts: list[str]


@dataclass
class Group:
    """One future `TextData` record."""

    source: str  # "folder" or "filelist"
    name: str
    clips: list[PackClip] = field(default_factory=list)


@dataclass
class SkippedClip:
    """A clip left out of the output, and why."""

    path: str
    reason: str


@dataclass
class BuildSummary:
    """What a build wrote and what it left out."""

    groups: int = 0
    sentences: int = 0
    frames: int = 0
    empty_groups: list[str] = field(default_factory=list)
    skipped: list[SkippedClip] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    num_codebooks: int | None = None

    @property
    def audio_hours(self) -> float:
        return self.frames * SAMPLES_PER_FRAME / SAMPLE_RATE / 3600

    def to_dict(self) -> dict:
        data = asdict(self)
        data["audio_hours"] = self.audio_hours
        return data

    def format(self) -> str:
        lines = [
            f"groups: {self.groups}  sentences: {self.sentences}  frames: {self.frames} "
            f"({self.audio_hours:.3f} h of audio)  shards: {len(self.shards)}  skipped clips: {len(self.skipped)}"
        ]
        lines += [f"  skipped {s.path}: {s.reason}" for s in self.skipped]
        lines += [f"  group {name!r} has no usable clip (written empty)" for name in self.empty_groups]
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Discovery


def _sort_key(path: Path) -> tuple[str, ...]:
    # Upstream sorts `Path`s, which compares path components: `SPK1/…` before `SPK1-x/…`.
    return path.parts


def _read_texts(codes: Path, text_extensions: Sequence[str]) -> list[str] | str:
    """The cleaned transcript per extension, or the reason the clip cannot be used."""
    texts = []
    for ext in text_extensions:
        path = codes.with_suffix(ext)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return f"no transcript {path.name}"
        except OSError as e:
            return f"cannot read transcript {path.name}: {e.strerror or e}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return f"transcript {path.name} is not UTF-8 (byte {e.start})"
        texts.append(clean_build_text(text.removeprefix("\ufeff")))
    return texts


def _outside(path: Path, root: Path) -> bool:
    if not path.is_symlink():
        return False
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return True
    return False


def _files_below(root: Path, skipped: list[SkippedClip]) -> Iterator[Path]:
    """Every file below `root` (paths as given, unresolved); symlinked folders are reported, not followed."""

    def fail(e: OSError) -> None:
        raise UserError(f"{e.filename}: cannot list folder ({e.strerror})")

    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames):
            if (here / name).is_symlink():
                skipped.append(SkippedClip(str(here / name), "symbolic link to a folder: not followed"))
        for name in filenames:
            yield here / name


def _codes_in_folders(
    root: Path, code_roots: Sequence[Path], skipped: list[SkippedClip]
) -> dict[Path, tuple[Path, Path]]:
    """The codes files under `code_roots`, by the path they stand for beside the clips in `root`."""
    found: dict[Path, tuple[Path, Path]] = {}
    for code_root in code_roots:
        for path in _files_below(code_root, skipped):
            if is_temp_file(path) or not path.is_file() or path.suffix != ".npy":
                continue
            beside = root / path.relative_to(code_root)
            if beside in found:
                raise UserError(
                    f"{path.relative_to(code_root)}: codes in two code folders ({found[beside][1]} and {code_root})"
                )
            found[beside] = (path, code_root)
    return found


def discover_folder(
    root: Path, text_extensions: Sequence[str], skipped: list[SkippedClip], code_roots: Sequence[Path] = ()
) -> list[Group]:
    """Groups of a folder: every clip with codes below it, grouped by parent folder, in sorted order.

    Codes are the `*.npy` beside each clip, or, with `code_roots`, those at the clip's relative path
    under one of these folders (what `extract-vq --output-dir` writes); codes of one clip found in two
    code folders are an error.
    """
    found: dict[Path, tuple[Path, Path]] = {}  # path beside the clip -> (codes file, the root it is in)
    others: dict[Path, Path] = {}  # stem -> an audio or transcript file of that stem
    for path in _files_below(root, skipped):
        if is_temp_file(path) or not path.is_file():
            continue
        if path.suffix == ".npy":
            if not code_roots:
                found[path] = (path, root)
        elif path.suffix.lower() in AUDIO_EXTENSIONS or path.suffix in text_extensions:
            stem = path.with_suffix("")
            others[stem] = min(others.get(stem, path), path, key=_sort_key)
    found.update(_codes_in_folders(root, code_roots, skipped))
    codes_files = sorted(found, key=_sort_key)

    # Clips that have audio or a transcript but no codes: upstream ignores them silently.
    with_codes = {p.with_suffix("") for p in codes_files}
    for stem in sorted(others.keys() - with_codes, key=_sort_key):
        skipped.append(SkippedClip(str(others[stem]), "no codes (.npy): run extract-vq first"))

    groups: dict[Path, Group] = {}
    for beside in codes_files:
        codes, codes_root = found[beside]
        if _outside(codes, codes_root):
            skipped.append(SkippedClip(str(codes), f"symbolic link to a file outside {codes_root}"))
            continue
        texts = _read_texts(beside, text_extensions)
        if isinstance(texts, str):
            skipped.append(SkippedClip(str(codes), texts))
            continue
        # Group name = the parent folder's name on the path as given (so `--input .` gives "").
        group = groups.setdefault(beside.parent, Group("folder", beside.parent.name))
        group.clips.append(PackClip(codes, texts))
    return list(groups.values())


def discover_filelist(filelist: Path, skipped: list[SkippedClip]) -> list[Group]:
    """Groups of a Bert-VITS2 filelist (`path|speaker|language|text` per line), by speaker."""
    try:
        lines = filelist.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{filelist}: filelist is not UTF-8 (byte {e.start})") from e
    groups: dict[str, Group] = {}
    for number, line in enumerate(lines, 1):
        fields = line.strip().split("|", 3)
        where = f"{filelist}:{number}"
        if len(fields) != 4:
            if line.strip():
                skipped.append(SkippedClip(where, "filelist line needs 4 fields: path|speaker|language|text"))
            continue
        path, speaker, language, text = fields
        language = language.strip().lower()
        if language not in FILELIST_LANGUAGES:
            raise UserError(f"{where}: unsupported language {language!r} (use zh, jp/ja or en)")
        audio = Path(path)
        if not audio.exists() and not audio.is_absolute() and (filelist.parent / audio).exists():
            audio = filelist.parent / audio  # also accept paths relative to the filelist
        if not audio.exists():
            skipped.append(SkippedClip(where, f"listed file {path} does not exist"))
            continue
        group = groups.setdefault(speaker, Group("filelist", speaker))
        group.clips.append(PackClip(audio.with_suffix(".npy"), [clean_build_text(text)]))
    return list(groups.values())


def discover(
    inputs: Sequence[str | os.PathLike],
    text_extensions: Sequence[str],
    skipped: list[SkippedClip],
    code_roots: Sequence[str | os.PathLike] = (),
) -> list[Group]:
    """Groups of every input (folders or filelists), in the order the inputs are given.

    `code_roots`: folders holding the input folders' codes at the clips' relative paths (see
    `discover_folder`); filelists always read the codes beside each listed clip.
    """
    roots = [Path(r) for r in code_roots]
    for r in roots:
        if not r.is_dir():
            raise UserError(f"{r}: codes folder does not exist")
    groups: list[Group] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            groups += discover_folder(path, text_extensions, skipped, roots)
        elif path.is_file():
            groups += discover_filelist(path, skipped)
        else:
            raise UserError(f"{path}: input folder or filelist does not exist")
    return groups


# --------------------------------------------------------------------------------------------------
# Packing (runs in worker processes)


def try_read_codes(path: Path, num_codebooks: int | None) -> np.ndarray | str:
    """The clip's codes as a (codebooks, frames) integer array, or the reason they are unusable."""
    try:
        codes = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        return "no codes (.npy): run extract-vq first"
    except Exception as e:  # numpy raises ValueError/OSError/EOFError/UnpicklingError on bad files
        return f"cannot read codes: {e}"
    if codes.ndim != 2:
        return f"codes must be a 2-D array (codebooks, frames), got shape {codes.shape}"
    if codes.dtype.kind not in "iu":
        return f"codes must be integers, got {codes.dtype}"
    if num_codebooks is not None and codes.shape[0] != num_codebooks:
        return f"codes have {codes.shape[0]} codebooks, expected {num_codebooks}"
    if codes.shape[1] == 0:
        return "codes have no frames"
    if codes.min() < 0 or codes.max() >= 1 << 32:
        return f"codes must be in [0, 2^32), got [{codes.min()}, {codes.max()}]"
    return codes


@dataclass
class PackedGroup:
    """A serialized `TextData` and what went into it."""

    record: bytes
    name: str
    sentences: int
    frames: int
    skipped: list[SkippedClip]


def pack_clip(clip: PackClip, num_codebooks: int | None) -> tuple[bytes, int] | SkippedClip:
    """One clip as a serialized `Sentence` and its frame count, or the reason it is skipped."""
    codes = try_read_codes(clip.codes, num_codebooks)
    if isinstance(codes, str):
        return SkippedClip(str(clip.codes), codes)
    sentence = Sentence(texts=clip.texts, semantics=[Semantics(values=row) for row in codes.tolist()])
    return sentence.SerializeToString(), int(codes.shape[1])


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SENTENCES_TAG = bytes([(4 << 3) | 2])  # TextData.sentences: field 4, length-delimited


def assemble_group(group: Group, sentences: Sequence[bytes]) -> bytes:
    """The serialized `TextData` of `group` from its serialized sentences.

    Protobuf writes fields in number order and a repeated message field as one tag + length +
    payload per element, so this equals building the message and calling `SerializeToString()`
    (the tests compare both); it lets workers serialize clips in parallel within one group.
    """
    parts = [TextData(source=group.source, name=group.name).SerializeToString()]
    for sentence in sentences:
        parts += [_SENTENCES_TAG, _varint(len(sentence)), sentence]
    return b"".join(parts)


def _collect(group: Group, results: Sequence[tuple[bytes, int] | SkippedClip]) -> PackedGroup:
    kept = [r for r in results if not isinstance(r, SkippedClip)]
    skipped = [r for r in results if isinstance(r, SkippedClip)]
    record = assemble_group(group, [sentence for sentence, _ in kept])
    return PackedGroup(record, group.name, len(kept), sum(frames for _, frames in kept), skipped)


def _pack_task(task: tuple[PackClip, int | None]) -> tuple[bytes, int] | SkippedClip:
    return pack_clip(*task)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"


def infer_num_codebooks(groups: Iterable[Group]) -> int | None:
    """Rows of the first readable 2-D codes file (read from its header only)."""
    for group in groups:
        for clip in group.clips:
            try:
                codes = np.load(clip.codes, mmap_mode="r", allow_pickle=False)
            except Exception:
                continue
            if codes.ndim == 2:
                return int(codes.shape[0])
    return None


def pack_groups(
    groups: Sequence[Group], num_codebooks: int | None, num_workers: int
) -> Iterator[PackedGroup]:
    """Packed groups in the order given; clips are packed by `num_workers` processes when more than one.

    Work is split per clip (not per group), so a single-speaker dataset uses every worker too.
    """
    tasks = [(clip, num_codebooks) for group in groups for clip in group.clips]
    workers = min(num_workers, len(tasks)) or 1
    chunksize = max(1, min(64, len(tasks) // (workers * 8)))
    # in order (never as completed): the output never depends on the number of workers
    results = imap_in_workers(
        _pack_task,
        tasks,
        num_workers,
        chunksize,
        min_jobs=MIN_CLIPS_FOR_WORKERS - 1,
        initializer=_init_worker,
    )
    yield from _regroup(groups, results)


def _regroup(groups: Sequence[Group], results: Iterator) -> Iterator[PackedGroup]:
    for group in groups:
        yield _collect(group, [next(results) for _ in group.clips])


# --------------------------------------------------------------------------------------------------
# The whole step


def build_dataset(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    text_extensions: Sequence[str] = (".lab",),
    num_workers: int = 16,
    shard_size_mb: float = 10,
    num_codebooks: int | None = None,
    report: str | os.PathLike | None = None,
    codes: Sequence[str | os.PathLike] = (),
) -> BuildSummary:
    """Discover clips under `inputs`, pack them and write `output/NNNNNNNN.protos`; return the summary.

    `num_codebooks` defaults to the row count of the first readable codes file; clips with another
    count are skipped. `codes`: folders with the codes at the clips' relative paths (default: beside
    each clip). Raises `UserError` when nothing usable is found (the previous output is kept).
    """
    text_extensions = [ext if ext.startswith(".") else f".{ext}" for ext in text_extensions]
    summary = BuildSummary()
    groups = discover(inputs, text_extensions, summary.skipped, codes)
    if not groups:
        raise UserError(
            f"no clip with codes and a transcript ({', '.join(text_extensions)}) in {', '.join(map(str, inputs))}"
            f" ({len(summary.skipped)} skipped)"
        )
    if num_codebooks is None:
        num_codebooks = infer_num_codebooks(groups)
    summary.num_codebooks = num_codebooks
    log.info("packing %d group(s), %d clip(s)", len(groups), sum(len(g.clips) for g in groups))

    def records() -> Iterator[bytes]:
        packed_iter = pack_groups(groups, num_codebooks, num_workers)
        for packed in tqdm(packed_iter, total=len(groups), desc="build-dataset", unit="group"):
            summary.groups += 1
            summary.sentences += packed.sentences
            summary.frames += packed.frames
            summary.skipped += packed.skipped
            if packed.sentences == 0:
                summary.empty_groups.append(packed.name)
            yield packed.record
        if summary.sentences == 0:
            # Raised inside the writer, so the staged shards are discarded and earlier output kept.
            raise UserError(f"no usable clip in {', '.join(map(str, inputs))}:\n{summary.format()}")

    shards = write_protos(records(), output, shard_size_mb)
    summary.shards = [str(p) for p in shards]
    if report is not None:
        import json

        atomic_write_text(report, json.dumps(summary.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return summary
