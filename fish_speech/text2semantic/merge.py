"""Fold LoRA adapters into the base weights: a full checkpoint dir in the base layout (upstream: `tools/llama/merge_lora.py`).

Unlike upstream's `merge_lora`, the output keeps the base weights as loaded (not re-randomised),
has one dtype (the base file's unless asked otherwise; the sum is formed in float32 and rounded
once) and carries `codec.pth` over, so the folder is complete for inference. Inputs: upstream's
LoRA `.ckpt` files or ours, or `best` / `last` / `earliest` / `step_N` of a training output.
`export_full_checkpoint` writes the same folder from a full fine-tuning checkpoint (no merge).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path, atomic_write_text, link_or_copy, sha256_file
from fish_speech.tensors import read_checkpoint
from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG

log = logging.getLogger(__name__)

MERGE_INFO = "merge_info.json"
_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def resolve_lora_weight(lora_weight: str | os.PathLike, train_output: str | os.PathLike | None) -> Path:
    """A LoRA checkpoint path from a file path or a selector (`best`, `last`, `earliest`, `step_N`)."""
    from fish_speech.text2semantic.training.checkpoints import SELECTORS, select_checkpoint

    text = os.fspath(lora_weight)
    path = Path(text)
    if path.is_file():
        return path
    if text in SELECTORS or re.fullmatch(r"step_?\d+(\.ckpt)?", text):
        if train_output is None:
            raise UserError(f"--lora-weight {text}: also pass --train-output DIR (the folder `train` wrote)")
        return select_checkpoint(text, train_output)
    if path.is_dir():
        raise UserError(
            f"{path}: is a folder; pass a .ckpt file, or --lora-weight best|last|earliest|step_N --train-output {path}"
        )
    raise UserError(f"{path}: LoRA checkpoint not found")


def merge_lora(
    base_weight: str | os.PathLike,
    lora_weight: str | os.PathLike,
    output: str | os.PathLike,
    lora_config: str = DEFAULT_LORA_CONFIG,
    lora_r: int | None = None,
    lora_alpha: float | None = None,
    train_output: str | os.PathLike | None = None,
    dtype: str = "base",
) -> Path:
    """Write `output/` = base checkpoint dir with the adapters merged into `model.pth`; return its path.

    `dtype`: `base` (the dtype of the base `model.pth`), `float32` or `bfloat16`. A rerun with the same
    inputs finds `merge_info.json` and does nothing.
    """
    from fish_speech.layout import CONFIG_FILE, MODEL_FILE
    from fish_speech.text2semantic.checkpoint import (
        REQUIRED_FILES,
        check_dir,
        check_state_dict,
        load_config,
        load_tokenizer,
        read_state_dict,
    )
    from fish_speech.text2semantic.lora import merge_lora_weights, read_lora_checkpoint, resolve_lora_spec

    base = check_dir(base_weight)
    out = Path(output)
    if out.resolve() == base.resolve():
        raise UserError(f"{out}: the output must not be the base checkpoint folder")
    config = load_config(base)
    load_tokenizer(base)  # a broken tokenizer is reported now, not at inference time
    spec = resolve_lora_spec(lora_config, lora_r, lora_alpha)
    lora_path = resolve_lora_weight(lora_weight, train_output)
    _check_recorded_config(lora_path, spec)

    fingerprint = {
        "base_weight": str(base.resolve()),
        "base_model_sha256": sha256_file(base / MODEL_FILE),
        "lora_weight": str(lora_path.resolve()),
        "lora_sha256": sha256_file(lora_path),
        "lora_config": spec.to_dict(),
        "dtype": dtype,
    }
    info_path = out / MERGE_INFO
    if _is_done(out, info_path, fingerprint, REQUIRED_FILES):
        log.info("%s already holds this merge; nothing to do", out)
        return out

    lora = read_lora_checkpoint(lora_path)
    state = read_state_dict(base / MODEL_FILE)
    check_state_dict(state, config, base / MODEL_FILE)
    out_dtype = _output_dtype(dtype, state)
    merged = merge_lora_weights(state, lora, spec, dtype=out_dtype, source=str(lora_path))

    _write_model_folder(out, info_path, base, merged)
    adapted = len(lora) // 2
    fingerprint.update(
        {
            "adapted_weights": adapted,
            "output_dtype": str(out_dtype).removeprefix("torch."),
            "config": CONFIG_FILE,
        }
    )
    atomic_write_text(info_path, json.dumps(fingerprint, indent=2) + "\n")
    log.info("merged %d adapters of %s into %s (%s)", adapted, lora_path, out, out_dtype)
    return out


def _check_recorded_config(lora_path: Path, spec) -> None:
    """Our checkpoints record their LoRA config: a different alpha/rank is a clear error, not bad weights."""
    from fish_speech.text2semantic.training.checkpoints import FULL_MODEL_DIR

    obj = read_checkpoint(lora_path, "LoRA checkpoint")  # memory-mapped: only the record is read
    meta = obj.get("fish_speech", {}) if isinstance(obj, dict) else {}
    if meta.get("mode") == "full":
        raise UserError(
            f"{lora_path}: a full fine-tuning checkpoint (train --mode full), not LoRA adapters: nothing to "
            f"merge; the training output's {FULL_MODEL_DIR}/ folder is the complete model"
        )
    recorded = meta.get("lora_config")
    if recorded and (int(recorded["r"]), float(recorded["alpha"])) != (spec.r, float(spec.alpha)):
        raise UserError(
            f"{lora_path}: trained with LoRA r={recorded['r']} alpha={recorded['alpha']} ({recorded.get('name')}), "
            f"but --lora-config {spec.name} has r={spec.r} alpha={spec.alpha}"
        )


def export_full_checkpoint(
    checkpoint: str | os.PathLike,
    base_weight: str | os.PathLike,
    output: str | os.PathLike,
    dtype: str = "base",
) -> Path:
    """Write `output/` = the base checkpoint folder with `model.pth` from a full fine-tuning checkpoint.

    `dtype` as in `merge_lora` (`base`: the base file's, bf16 for the released model). The result loads
    strictly under its own `config.json`; a rerun with the same inputs does nothing.
    """
    from fish_speech.layout import CONFIG_FILE, MODEL_FILE
    from fish_speech.text2semantic.checkpoint import (
        REQUIRED_FILES,
        check_dir,
        check_state_dict,
        load_config,
        read_state_dict,
    )

    base = check_dir(base_weight)
    ckpt = Path(checkpoint)
    out = Path(output)
    if out.resolve() == base.resolve():
        raise UserError(f"{out}: the output must not be the base checkpoint folder")
    fingerprint = {
        "base_weight": str(base.resolve()),
        "full_checkpoint": str(ckpt.resolve()),
        "full_checkpoint_sha256": sha256_file(ckpt),
        "dtype": dtype,
    }
    info_path = out / MERGE_INFO
    if _is_done(out, info_path, fingerprint, REQUIRED_FILES):
        log.info("%s already holds this model; nothing to do", out)
        return out
    obj = read_checkpoint(ckpt, "full fine-tuning checkpoint")
    if not isinstance(obj, dict) or obj.get("fish_speech", {}).get("mode") != "full":
        raise UserError(f"{ckpt}: not a full fine-tuning checkpoint (train --mode full)")
    config = load_config(base)
    state = {k.removeprefix("model."): v for k, v in obj["state_dict"].items()}
    check_state_dict(state, config, ckpt)
    out_dtype = _output_dtype(dtype, read_state_dict(base / MODEL_FILE))
    state = {k: v.to(out_dtype) if v.is_floating_point() else v for k, v in state.items()}

    _write_model_folder(out, info_path, base, state)
    fingerprint.update({"output_dtype": str(out_dtype).removeprefix("torch."), "config": CONFIG_FILE})
    atomic_write_text(info_path, json.dumps(fingerprint, indent=2) + "\n")
    log.info("wrote the fine-tuned model %s from %s (%s)", out, ckpt.name, out_dtype)
    return out


def _write_model_folder(out: Path, info_path: Path, base: Path, state: dict[str, torch.Tensor]) -> None:
    """Write `state` with the base folder's other files (codec.pth linked) and check it loads back strictly.

    The fingerprint file `info_path` is removed first and written by the caller last, so an interrupted
    rewrite never looks finished.
    """
    from fish_speech.layout import CODEC_FILE, MODEL_FILE
    from fish_speech.text2semantic.checkpoint import (
        REQUIRED_FILES,
        check_state_dict,
        load_config,
        read_state_dict,
        save_state_dict,
    )

    out.mkdir(parents=True, exist_ok=True)
    info_path.unlink(missing_ok=True)
    save_state_dict(out / MODEL_FILE, state)
    for name in REQUIRED_FILES:
        if name != MODEL_FILE:
            with atomic_path(out / name) as tmp:
                shutil.copyfile(base / name, tmp)
    if (base / CODEC_FILE).is_file():
        link_or_copy(base / CODEC_FILE, out / CODEC_FILE)  # codec.pth is large: no second copy
    else:
        log.warning("%s: no %s to carry over; the output folder lacks the codec", base, CODEC_FILE)
    # the output must load back strictly under its own config.json
    check_state_dict(read_state_dict(out / MODEL_FILE), load_config(out), out / MODEL_FILE)


def _output_dtype(dtype: str, state: dict[str, torch.Tensor]) -> torch.dtype:
    if dtype == "base":
        found = {v.dtype for v in state.values() if v.is_floating_point()}
        return found.pop() if len(found) == 1 else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"--dtype {dtype!r}: use base, float32, bfloat16 or float16")
    return _DTYPES[dtype]


def _is_done(out: Path, info_path: Path, fingerprint: dict[str, Any], required: tuple[str, ...]) -> bool:
    if not info_path.is_file() or not all((out / n).is_file() for n in required):
        return False
    with contextlib.suppress(ValueError, OSError):
        done = json.loads(info_path.read_text(encoding="utf-8"))
        return all(done.get(k) == v for k, v in fingerprint.items())
    return False
