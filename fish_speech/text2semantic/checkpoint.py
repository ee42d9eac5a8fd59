"""Text-to-semantic checkpoint directories: check, load and write (upstream: the release folder and `DualARTransformer.from_pretrained`).

A checkpoint dir holds `model.pth` (plain state dict), `config.json`, `tokenizer.tiktoken` and
`special_tokens.json` (plus `codec.pth`, which this side never opens). Loading is strict: every
parameter must be present with the right shape, or a UserError names the file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path, atomic_write_text
from fish_speech.layout import CONFIG_FILE, MODEL_FILE, TEXT2SEMANTIC_FILES
from fish_speech.tensors import load_tensors
from fish_speech.text2semantic.model import DualARTransformer, ModelConfig
from fish_speech.text2semantic.tokenizer import (
    FishTokenizer,
)

log = logging.getLogger(__name__)

# Files the text-to-semantic side reads from a checkpoint dir (codec.pth belongs to the codec).
REQUIRED_FILES = TEXT2SEMANTIC_FILES
# dtype of upstream's released model.pth
CHECKPOINT_DTYPE = torch.bfloat16


def check_dir(checkpoint_dir: str | os.PathLike, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """Return the dir as a Path; raise UserError naming the first missing file."""
    path = Path(checkpoint_dir)
    if path.is_file():
        raise UserError(
            f"{path}: is a file; expected the checkpoint folder that holds {', '.join(required)} "
            f"(here probably {path.parent})"
        )
    if not path.is_dir():
        raise UserError(f"{path}: checkpoint directory not found")
    for name in required:
        if not (path / name).is_file():
            raise UserError(
                f"{path / name}: missing from the checkpoint directory (needs {', '.join(required)})"
            )
    return path


def load_config(checkpoint_dir: str | os.PathLike) -> ModelConfig:
    """Read `config.json` of a checkpoint dir (UserError on a missing or invalid file)."""
    return ModelConfig.from_json(Path(checkpoint_dir) / CONFIG_FILE)


def _meta_model(
    config: ModelConfig, semantic_begin_id: int = 0, semantic_end_id: int = 0
) -> DualARTransformer:
    with torch.device("meta"):
        return DualARTransformer(config, semantic_begin_id, semantic_end_id)


def expected_t2s_state_dict_shapes(config: ModelConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Key -> (shape, dtype) of the `model.pth` a config implies, in upstream's order (nothing allocated)."""
    model = _meta_model(config)
    return {k: (tuple(v.shape), CHECKPOINT_DTYPE) for k, v in model.state_dict().items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load `model.pth` (weights only, memory-mapped) and normalise its keys as upstream's loader.

    Accepts a Lightning-style `{"state_dict": ...}`, strips a leading `model.`, drops `audio_*` keys and
    fuses a legacy `attention.wq/wk/wv` layout into `attention.wqkv`.
    """
    path = Path(path)
    obj = load_tensors(path, "model weights")
    if obj and next(iter(obj)).startswith("model."):
        obj = {k.removeprefix("model."): v for k, v in obj.items()}
    state = {k: v for k, v in obj.items() if "audio_" not in k}
    for wq in [k for k in state if k.endswith("attention.wq.weight")]:
        stem = wq.removesuffix("wq.weight")
        parts = [state.pop(f"{stem}{n}.weight", None) for n in ("wq", "wk", "wv")]
        if any(p is None for p in parts):
            raise UserError(f"{path}: {stem}wq/wk/wv incomplete")
        state[f"{stem}wqkv.weight"] = torch.cat(parts)
    return state


def check_state_dict(state: dict[str, torch.Tensor], config: ModelConfig, source: str | os.PathLike) -> None:
    """Raise UserError naming `source` when keys or shapes differ from what `config` implies."""
    expected = expected_t2s_state_dict_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} != {expected[k][0]}"
        for k in expected
        if k in state and tuple(state[k].shape) != expected[k][0]
    ]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshaped)):
        if items:
            shown = ", ".join(items[:5]) + (f", ... ({len(items)} in all)" if len(items) > 5 else "")
            problems.append(f"{label}: {shown}")
    if problems:
        raise UserError(f"{source}: does not match config.json: " + "; ".join(problems))


def load_model(
    checkpoint_dir: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    max_seq_len: int | None = None,
) -> DualARTransformer:
    """Build the model of a checkpoint dir and load its weights strictly.

    Parameters keep the file's dtype (bf16 for the released model) unless `dtype` is given; a file with
    mixed float dtypes (upstream's merge output) is loaded as float32. `max_seq_len` overrides the
    config (training uses 4096). The model is returned in eval mode.
    """
    path = check_dir(checkpoint_dir)
    config = load_config(path)
    if max_seq_len is not None:
        config.max_seq_len = max_seq_len
    tokenizer = FishTokenizer.from_dir(path)
    if tokenizer.total_tokens > config.vocab_size:
        raise UserError(
            f"{path / CONFIG_FILE}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.total_tokens} tokens"
        )
    if tokenizer.num_semantic_tokens < config.codebook_size:
        log.warning(
            "%s: %d semantic tokens for codebook_size %d",
            path,
            tokenizer.num_semantic_tokens,
            config.codebook_size,
        )
    state = read_state_dict(path / MODEL_FILE)
    check_state_dict(state, config, path / MODEL_FILE)
    float_dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
    stored = _dtype_name(float_dtypes.copy().pop()) if len(float_dtypes) == 1 else "mixed float dtypes"
    if dtype is None:
        dtype = float_dtypes.pop() if len(float_dtypes) == 1 else torch.float32
    state = {
        k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in state.items()
    }

    # Build on the meta device (no random init of ~860M parameters), then adopt the loaded tensors.
    model = _meta_model(config, tokenizer.semantic_begin_id, tokenizer.semantic_id_end)
    model.load_state_dict(state, strict=True, assign=True)
    model.reset_buffers(device)
    log.info(
        "loaded %s: %s parameters, stored as %s, loaded as %s on %s",
        path / MODEL_FILE,
        f"{sum(p.numel() for p in model.parameters()):,}",
        stored,
        _dtype_name(dtype),
        device,
    )
    return model.eval()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_tokenizer(checkpoint_dir: str | os.PathLike) -> FishTokenizer:
    """The tokenizer of a checkpoint dir."""
    return FishTokenizer.from_dir(checkpoint_dir)


def save_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor]) -> None:
    """Atomically `torch.save` a plain state dict (contiguous CPU tensors, upstream's layout)."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_config(directory: str | os.PathLike, config: ModelConfig) -> None:
    """Write `config.json` as upstream does."""
    atomic_write_text(Path(directory) / CONFIG_FILE, config.to_json_text())


def reference_outputs(
    model: DualARTransformer, inputs: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """The four outputs upstream's parity script dumps, keyed by its file suffix (float32, on CPU).

    `""`: training-forward token logits; `".codebook"`: codebook logits; `".generate"`: inference
    logits (no padding mask); `".hidden"`: the fast transformer's input hidden state.
    """
    with torch.no_grad():
        token_logits, codebook_logits = model(inputs, labels, attention_mask)
        generate_logits, hidden = model.forward_generate(inputs)
    outs = {"": token_logits, ".codebook": codebook_logits, ".generate": generate_logits, ".hidden": hidden}
    return {k: v.float().cpu() for k, v in outs.items()}
