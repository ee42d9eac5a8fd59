"""A local folder (or a mounted volume) behind the same interface as the object stores."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from fish_speech.fileio import atomic_path, sha256_file
from fish_speech.storage.base import EmptyPrefixError, RemoteObject
from fish_speech.storage.manifest import list_files

_CHUNK = 4 << 20


class LocalStore:
    """Files under `root`; listing reports each file's sha256 so copies are verified like downloads."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return f"{self.root}/"

    def list(self) -> list[RemoteObject]:
        if not self.root.is_dir():
            raise EmptyPrefixError(f"{self.root}: no such directory")
        files = list_files(self.root)
        if not files:
            raise EmptyPrefixError(f"{self.root}: directory is empty")
        return [
            RemoteObject(rel, rel, (self.root / rel).stat().st_size, ("sha256", sha256_file(self.root / rel)))
            for rel in files
        ]

    def download(
        self, obj: RemoteObject, out: BinaryIO, offset: int, progress: Callable[[int], None]
    ) -> None:
        with open(self.root / obj.key, "rb") as f:
            f.seek(offset)
            while chunk := f.read(_CHUNK):
                out.write(chunk)
                progress(len(chunk))

    def upload(self, path: os.PathLike, rel: str) -> None:
        with atomic_path(self.root / rel) as tmp:
            shutil.copyfile(path, tmp)
