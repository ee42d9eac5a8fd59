"""Reading `.pth` / `.ckpt` files: the one `torch.load` of the project (weights only, errors name the file)."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fish_speech.errors import UserError, load_failure


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", mmap: bool = True) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a missing or unreadable file is a UserError.

    `mmap`: map a zip-format file instead of reading it (tensors are paged in only when used, so a shape
    check or a partial load costs little). `what` names the file's role in the messages.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except Exception as e:  # truncated zip, forbidden pickle globals, not a torch file
        # one line: torch's own message is several lines of advice about weights_only=False
        raise UserError(f"{path}: cannot read the file, so cannot load {what}: {load_failure(e)}") from None


def load_tensors(
    path: str | os.PathLike, what: str = "checkpoint", mmap: bool = True
) -> dict[str, torch.Tensor]:
    """The name -> tensor mapping of a `.pth` (a Lightning-style `{"state_dict": ...}` is unwrapped)."""
    obj = read_checkpoint(path, what, mmap)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise UserError(f"{path}: expected a mapping of parameter names to tensors, got {type(obj).__name__}")
    return dict(obj)
