"""LoRA training checkpoints: names, atomic writes, picking the one to resume from or to merge.

A checkpoint `checkpoints/step_000000100.ckpt` is a Lightning checkpoint as upstream writes it (its
`state_dict` holds only the `model.<path>.lora_A/B` tensors, so upstream's `merge_lora` reads it)
plus the full training state: optimizer, LR schedule, loop counters, RNG states, and our
`fish_speech` section (LoRA config, validation loss). It is written under a `.tmp-*` name and renamed,
and resuming takes the highest step that loads completely, never the newest file by modification time
(which is how upstream can pick a half-written file).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path, is_temp_file
from fish_speech.tensors import read_checkpoint

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
FULL_MODEL_DIR = "model"  # full fine-tuning: the complete checkpoint folder beside checkpoints/
_NAME_RE = re.compile(r"^step_(\d+)\.ckpt$")
REQUIRED_KEYS = ("state_dict", "global_step", "optimizer_states", "lr_schedulers", "loops", "fish_speech")


def checkpoint_name(step: int) -> str:
    """Upstream's file name for the checkpoint after `step` optimizer steps."""
    return f"step_{step:09d}.ckpt"


def checkpoint_step(path: str | os.PathLike) -> int | None:
    m = _NAME_RE.match(Path(path).name)
    return int(m.group(1)) if m else None


def list_checkpoints(ckpt_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, path) of every `step_*.ckpt` in `ckpt_dir`, by step; temporary files are skipped."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        step = checkpoint_step(p)
        if step is not None and p.is_file() and not is_temp_file(p):
            found.append((step, p))
    return sorted(found)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint on the CPU (weights only); UserError naming the file if unreadable."""
    obj = read_checkpoint(path, "training checkpoint", mmap=False)
    if not isinstance(obj, dict):
        raise UserError(f"{path}: not a checkpoint dict")
    return obj


def is_complete(path: str | os.PathLike) -> bool:
    """True when `path` loads and carries a full training state."""
    try:
        obj = load_checkpoint(path)
    except UserError as e:
        log.warning("%s", e)
        return False
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        log.warning("%s: not a full training state (missing %s)", path, ", ".join(missing))
        return False
    return True


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The highest-step checkpoint that loads completely; broken ones are reported and skipped."""
    for step, path in reversed(list_checkpoints(ckpt_dir)):
        if is_complete(path):
            return path
        log.warning("skipping incomplete checkpoint %s (step %d)", path, step)
    return None


def remove_temp_files(ckpt_dir: str | os.PathLike) -> None:
    """Delete `.tmp-*` leftovers of a killed run."""
    ckpt_dir = Path(ckpt_dir)
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            if is_temp_file(p):
                p.unlink(missing_ok=True)


def make_checkpoint_io():
    """A Lightning CheckpointIO that writes atomically and loads with `weights_only=True`."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
            with atomic_path(path) as tmp:
                torch.save(checkpoint, tmp)

        def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
            return torch.load(path, map_location=map_location or "cpu", weights_only=True)

    return AtomicCheckpointIO()


def prune_checkpoints(ckpt_dir: str | os.PathLike, keep_last: int, protect: set[int]) -> list[Path]:
    """Delete all but the `keep_last` newest checkpoints and the steps in `protect` (0 keeps all)."""
    if keep_last <= 0:
        return []
    found = list_checkpoints(ckpt_dir)
    newest = {s for s, _ in found[-keep_last:]}
    removed = []
    for step, path in found:
        if step not in newest and step not in protect:
            path.unlink(missing_ok=True)
            removed.append(path)
            log.info("removed old checkpoint %s", path.name)
    return removed


SELECTORS = ("best", "last", "earliest")


def select_checkpoint(which: str, train_output: str | os.PathLike) -> Path:
    """Resolve `best` / `last` / `earliest` / `step_N` in a training output folder (or its checkpoints/).

    `best` is the checkpoint with the lowest validation loss (read from the checkpoints themselves);
    without any validation loss it is an error.
    """
    root = Path(train_output)
    ckpt_dir = root / CHECKPOINT_DIR if (root / CHECKPOINT_DIR).is_dir() else root
    found = [(s, p) for s, p in list_checkpoints(ckpt_dir)]
    if not found:
        raise UserError(f"{ckpt_dir}: no step_*.ckpt checkpoints to choose '{which}' from")
    m = re.fullmatch(r"step_?(\d+)(?:\.ckpt)?", which)
    if m:
        step = int(m.group(1))
        for s, p in found:
            if s == step:
                return p
        raise UserError(
            f"{ckpt_dir}: no checkpoint for step {step} (have {', '.join(str(s) for s, _ in found)})"
        )
    if which == "last":
        return found[-1][1]
    if which == "earliest":
        return found[0][1]
    if which == "best":
        scored = []
        for s, p in found:
            try:
                meta = load_checkpoint(p).get("fish_speech", {})
            except UserError as e:
                log.warning("%s", e)
                continue
            val = meta.get("val_loss")
            if val is not None:
                scored.append((val, s, p))
        if not scored:
            raise UserError(
                f"{ckpt_dir}: no checkpoint has a validation loss (trained with --val-fraction 0?)"
            )
        return min(scored)[2]
    raise UserError(f"unknown checkpoint selector {which!r}: use a path, best, last, earliest or step_N")
