"""The `*.protos` stream: length-prefixed `TextData` records, written in shards and read back.

Format (upstream `fish_speech/datasets/protos/`): a file is a plain concatenation of records; each record is a
4-byte little-endian unsigned length followed by that many bytes of a serialized `TextData`.
Shards are named `00000000.protos`, `00000001.protos`, ... directly in the output folder; a shard
is closed once the bytes written to it (prefixes included) exceed the threshold, so a record (one
whole group) is never split across shards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

from fish_speech.dataset.text_data_pb2 import Semantics, Sentence, TextData
from fish_speech.errors import UserError
from fish_speech.fileio import is_temp_file, temp_path_for

__all__ = [
    "Semantics",
    "Sentence",
    "TextData",
    "expand_braces",
    "list_proto_files",
    "read_protos",
    "read_protos_file",
    "shard_name",
    "write_protos",
]

log = logging.getLogger(__name__)

_PREFIX = struct.Struct("<I")
_SHARD_RE = re.compile(r"^\d{8}\.protos$")
MB = 1024 * 1024


def shard_name(index: int) -> str:
    """File name of shard `index`: `00000000.protos`, `00000001.protos`, ..."""
    return f"{index:08d}.protos"


def encode_record(data: TextData | bytes) -> bytes:
    """One record of the stream: the 4-byte little-endian length, then the serialized message."""
    payload = data if isinstance(data, bytes) else data.SerializeToString()
    if len(payload) >= 1 << 32:
        raise UserError(f"a group serializes to {len(payload)} bytes, more than a record can hold (4 GiB)")
    return _PREFIX.pack(len(payload)) + payload


def write_protos(
    groups: Iterable[TextData | bytes], out_dir: str | os.PathLike, shard_size_mb: float = 10
) -> list[Path]:
    """Write `groups` (messages or already serialized `TextData` bytes) as shards in `out_dir`.

    Every shard is written and fsynced under a temporary `.tmp-*` name first; only when the last
    group is on disk are they renamed into place (in index order), then shards left over from an
    earlier, larger run are removed. A run that fails or is killed while writing leaves the
    previous output untouched (plus at most `.tmp-*` files, which readers skip and the next run
    deletes). No group writes no file. Returns the shard paths in order.
    """
    out_dir = Path(out_dir)
    if shard_size_mb <= 0:
        raise UserError(f"shard size must be positive, got {shard_size_mb} MB")
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_shards(out_dir)
    limit = shard_size_mb * MB
    staged: list[tuple[Path, Path]] = []  # (temporary, final)
    handle = None
    try:
        written = 0
        for group in groups:
            if handle is None:
                final = out_dir / shard_name(len(staged))
                tmp = temp_path_for(final)
                handle = open(tmp, "wb")  # noqa: SIM115 (closed by _finish, or below on failure)
                staged.append((tmp, final))
                written = 0
            record = encode_record(group)
            handle.write(record)
            written += len(record)
            if written > limit:
                _finish(handle)
                handle = None
        if handle is not None:
            _finish(handle)
            handle = None
    except BaseException:
        if handle is not None:
            handle.close()
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    _remove_stale_shards(out_dir, keep=len(staged))
    log.info("wrote %d shard(s) to %s", len(staged), out_dir)
    return [final for _, final in staged]


def _finish(handle) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def _remove_stale_shards(out_dir: Path, keep: int) -> None:
    for path in out_dir.iterdir():
        if _SHARD_RE.match(path.name) and int(path.name[:8]) >= keep:
            log.info("removing stale shard %s from an earlier run", path)
            path.unlink()


def _remove_stale_temp_shards(out_dir: Path) -> None:
    # Left behind only by a run killed with SIGKILL (atomic_path cleans up on any exception).
    for path in out_dir.glob(".tmp-*.protos.*"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def expand_braces(pattern: str) -> list[str]:
    """Shell-style brace expansion: `data/{a,b}/x` -> `data/a/x`, `data/b/x` (nesting allowed)."""
    depth = 0
    start = -1
    for i, ch in enumerate(pattern):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                options = _split_top_level(pattern[start + 1 : i])
                if len(options) < 2:  # `{x}` is not a brace expansion in the shell either
                    return [pattern[: i + 1] + rest for rest in expand_braces(pattern[i + 1 :])]
                head, tail = pattern[:start], pattern[i + 1 :]
                return [
                    head + option + rest
                    for option_text in options
                    for option in expand_braces(option_text)
                    for rest in expand_braces(tail)
                ]
    return [pattern]


def _split_top_level(body: str) -> list[str]:
    parts, depth, current = [], 0, []
    for ch in body:
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current.append(ch)
    parts.append("".join(current))
    return parts


def list_proto_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files, folders (searched recursively for `*.proto` / `*.protos`) and brace patterns.

    Returns the files sorted (the order upstream's training dataset starts from before it shuffles).
    A path that is neither a file nor a folder is a `UserError`.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: set[Path] = set()
    for entry in paths:
        for expanded in expand_braces(os.fspath(entry)):
            path = Path(expanded)
            if path.is_dir():
                for found in path.rglob("*"):
                    if found.suffix in (".proto", ".protos") and found.is_file() and not is_temp_file(found):
                        files.add(found)
            elif path.is_file():
                files.add(path)
            else:
                raise UserError(f"{path}: no such protos file or folder")
    return sorted(files)


def read_protos_file(path: str | os.PathLike) -> Iterator[TextData]:
    """Stream the `TextData` records of one `.protos` file; a truncated or corrupt file is a `UserError`."""
    path = Path(path)
    with open(path, "rb") as f:
        index = 0
        while True:
            offset = f.tell()
            prefix = f.read(_PREFIX.size)
            if not prefix:
                return
            if len(prefix) < _PREFIX.size:
                raise UserError(
                    f"{path}: truncated protos file (partial length prefix of record {index} at byte {offset})"
                )
            (size,) = _PREFIX.unpack(prefix)
            payload = f.read(size)
            if len(payload) < size:
                raise UserError(
                    f"{path}: truncated protos file (record {index} at byte {offset} needs {size} bytes, "
                    f"{len(payload)} left)"
                )
            message = TextData()
            try:
                message.ParseFromString(payload)
            except Exception as e:  # google.protobuf.message.DecodeError
                raise UserError(f"{path}: corrupt protos record {index} at byte {offset}: {e}") from e
            yield message
            index += 1


def read_protos(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> Iterator[TextData]:
    """Stream every `TextData` record of the files `list_proto_files(paths)` finds, file by file."""
    for path in list_proto_files(paths):
        yield from read_protos_file(path)
