"""The `--device` flag of the commands that run a model: auto, cpu, cuda or cuda:N."""

from __future__ import annotations

import torch

from fish_speech.errors import UserError


def resolve_device(device: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; a CUDA device on a machine without one is a UserError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but no CUDA device is available")
    return torch.device(device)
