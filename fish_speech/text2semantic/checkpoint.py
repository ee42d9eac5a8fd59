"""Text-to-semantic checkpoint directories: check, load and write (spec: text2semantic.md §1, §6).

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
from fish_speech.text2semantic.model import DualARTransformer, ModelConfig
from fish_speech.text2semantic.tokenizer import (
    SPECIAL_TOKENS_FILE,
    TOKENIZER_FILE,
    FishTokenizer,
    write_tiny_tokenizer,
)

log = logging.getLogger(__name__)

MODEL_FILE = "model.pth"
CONFIG_FILE = "config.json"
CODEC_FILE = "codec.pth"
# Files the text-to-semantic side reads from a checkpoint dir (codec.pth belongs to the codec).
REQUIRED_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, SPECIAL_TOKENS_FILE)
# dtype of upstream's released model.pth
CHECKPOINT_DTYPE = torch.bfloat16


def check_dir(checkpoint_dir: str | os.PathLike, required: tuple[str, ...] = REQUIRED_FILES) -> Path:
    """Return the dir as a Path; raise UserError naming the first missing file."""
    path = Path(checkpoint_dir)
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
    try:
        obj = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: model file not found") from None
    except Exception as e:  # corrupt zip, pickle with forbidden globals, ...
        raise UserError(f"{path}: cannot load model weights: {e}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        raise UserError(f"{path}: expected a state dict (name -> tensor)")
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
    if dtype is None:
        float_dtypes = {v.dtype for v in state.values() if v.is_floating_point()}
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
        "loaded %s: %s parameters, %s on %s",
        path / MODEL_FILE,
        f"{sum(p.numel() for p in model.parameters()):,}",
        dtype,
        device,
    )
    return model.eval()


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


def write_random_t2s(out_dir: str | os.PathLike, config: ModelConfig | None = None, seed: int = 0) -> Path:
    """Write a random checkpoint in the real layout (bf16 `model.pth`, `config.json`, tokenizer files).

    The default config is the tiny one of the golden vectors (vocab 4672 over a 512-rank tokenizer).
    `codec.pth` is not written (the codec side does that). Deterministic for a given seed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = config or ModelConfig.tiny()
    tokenizer = write_tiny_tokenizer(out)
    if tokenizer.total_tokens > config.vocab_size:
        raise ValueError(f"vocab_size {config.vocab_size} < tokenizer size {tokenizer.total_tokens}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DualARTransformer(config, tokenizer.semantic_begin_id, tokenizer.semantic_id_end)
    save_state_dict(out / MODEL_FILE, {k: v.to(CHECKPOINT_DTYPE) for k, v in model.state_dict().items()})
    write_config(out, config)
    log.info("wrote random text-to-semantic checkpoint to %s", out)
    return out


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


def main(argv: list[str] | None = None) -> int:
    """`python -m fish_speech.text2semantic.checkpoint CKPT INPUTS.npy OUT.npy --labels L --attention-mask M`.

    Writes OUT.npy, OUT.codebook.npy, OUT.generate.npy and OUT.hidden.npy like upstream's parity script,
    for comparing logits on any checkpoint (e.g. random full-size weights on a GPU).
    """
    import argparse

    import numpy as np

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("checkpoint_dir")
    parser.add_argument("inputs")
    parser.add_argument("out")
    parser.add_argument("--labels", required=True)
    parser.add_argument("--attention-mask")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    model = load_model(args.checkpoint_dir, device=args.device, dtype=getattr(torch, args.dtype))
    load = lambda p: torch.from_numpy(np.load(p)).to(args.device)  # noqa: E731
    mask = load(args.attention_mask) if args.attention_mask else None
    outs = reference_outputs(model, load(args.inputs), load(args.labels), mask)
    stem = args.out.removesuffix(".npy")
    for suffix, value in outs.items():
        with atomic_path(f"{stem}{suffix}.npy", suffix=".npy") as tmp:
            np.save(tmp, value.numpy())
        log.info("wrote %s%s.npy %s", stem, suffix, tuple(value.shape))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
