"""Read and write `codec.pth` in upstream's layout (as `tools/vqgan/extract_vq.py` `get_model` loads it).

- `load_codec` accepts the three container shapes upstream accepts (a flat key -> tensor mapping,
  `{"state_dict": ...}`, and keys carrying a "generator." prefix), infers the config from the
  tensor shapes unless one is given, and requires the key set and shapes that config implies:
  anything missing, unexpected or mis-shaped is reported in one `UserError` naming the file.
- `expected_codec_state_dict_shapes` derives that key set from a config (541 keys for S1-mini,
  415 for the tiny golden codec) without allocating any weights.
- `write_random_codec` writes a random codec with the real key names, dtypes and buffers.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from fish_speech.codec.model import Codec, CodecConfig
from fish_speech.errors import UserError
from fish_speech.layout import CODEC_FILE
from fish_speech.tensors import load_tensors

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]

_LIST_LIMIT = 8


def expected_codec_state_dict_shapes(config: CodecConfig) -> Shapes:
    """Every key of a `codec.pth` for `config`, in file order, with its shape and dtype (meta device, no memory)."""
    with torch.device("meta"):
        model = Codec(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


# ----------------------------------------------------------------------------- reading


def resolve_codec_path(path: str | os.PathLike) -> Path:
    """`path` itself, or `path/codec.pth` when `path` is a checkpoint folder; UserError when neither exists."""
    path = Path(path)
    if path.is_dir():
        if not (path / CODEC_FILE).is_file():
            raise UserError(f"{path}: a folder without {CODEC_FILE}; pass the codec file (--checkpoint-path)")
        return path / CODEC_FILE
    if not path.is_file():
        raise UserError(f"{path}: codec checkpoint not found")
    return path


def read_codec_state_dict(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """The codec's tensors from `codec.pth` (or the folder holding it) or a training checkpoint,
    memory-mapped (skipped parts cost nothing)."""
    obj = load_tensors(resolve_codec_path(path), "codec checkpoint")
    if any("generator" in k for k in obj):
        # Training checkpoints: keep the generator only (upstream: substring replace, not a prefix strip).
        obj = {k.replace("generator.", ""): v for k, v in obj.items() if "generator." in k}
    return obj


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.match(k))})


def infer_codec_config(
    state: Mapping[str, torch.Tensor], path: str | os.PathLike = "codec.pth"
) -> CodecConfig:
    """The `CodecConfig` whose layout matches the tensor shapes in `state` (S1-mini, tiny, or other sizes)."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise UserError(f"{path}: not a codec checkpoint: missing {key!r} (have {len(state)} keys)")
        return tuple(state[key].shape)

    keys = list(state)
    wn = "conv.parametrizations.weight.original1"
    n_enc_blocks = _count(keys, r"encoder\.block\.(\d+)\.block\.4\.conv\.")
    rates = tuple(shape(f"encoder.block.{i}.block.4.{wn}")[-1] // 2 for i in range(1, n_enc_blocks + 1))
    enc_layers = tuple(
        _count(keys, rf"encoder\.block\.{i}\.block\.5\.layers\.(\d+)\.") for i in range(1, n_enc_blocks + 1)
    )
    pre_rope = shape("quantizer.pre_module.freqs_cis")
    head_dim = 2 * pre_rope[1]
    enc_block_size = CodecConfig.encoder_block_size
    for i, n in enumerate(enc_layers, start=1):
        if n:
            enc_block_size = shape(f"encoder.block.{i}.block.5.freqs_cis")[0]
    n_dec_blocks = _count(keys, r"decoder\.model\.(\d+)\.block\.1\.conv\.")
    dec_rates = tuple(shape(f"decoder.model.{i}.block.1.{wn}")[-1] // 2 for i in range(1, n_dec_blocks + 1))
    semantic = shape("quantizer.semantic_quantizer.quantizers.0.codebook.weight")
    n_residual = _count(keys, r"quantizer\.quantizer\.quantizers\.(\d+)\.codebook\.weight")
    n_down = _count(keys, r"quantizer\.downsample\.(\d+)\.0\.conv\.weight")
    config = CodecConfig(
        encoder_dim=shape(f"encoder.block.0.{wn}")[0],
        encoder_rates=rates,
        encoder_transformer_layers=enc_layers,
        encoder_block_size=enc_block_size,
        decoder_dim=shape(f"decoder.model.0.{wn}")[0],
        decoder_rates=dec_rates,
        head_dim=head_dim,
        downsample_factor=tuple(shape(f"quantizer.downsample.{i}.0.conv.weight")[-1] for i in range(n_down)),
        semantic_codebook_size=semantic[0],
        n_codebooks=n_residual,
        codebook_size=shape("quantizer.quantizer.quantizers.0.codebook.weight")[0] if n_residual else 1024,
        codebook_dim=semantic[1],
        quantizer_layers=_count(keys, r"quantizer\.pre_module\.layers\.(\d+)\."),
        quantizer_heads=shape("quantizer.pre_module.layers.0.attention.wqkv.weight")[0] // 3 // head_dim,
        quantizer_intermediate=shape("quantizer.pre_module.layers.0.feed_forward.w1.weight")[0],
        quantizer_block_size=pre_rope[0],
    )
    for preset in (CodecConfig.s1_mini(), CodecConfig.tiny()):
        if preset == config:  # `name` is excluded from comparison
            return preset
    return config


def _compatible(dtype: torch.dtype, expected: torch.dtype) -> bool:
    # Parameters are copied into float32 (as upstream's load_state_dict does): any float dtype works.
    return dtype == expected or (dtype.is_floating_point and expected.is_floating_point)


def check_codec_state_dict(
    state: Mapping[str, torch.Tensor], config: CodecConfig, path: str | os.PathLike = "codec.pth"
) -> None:
    """Raise one `UserError` listing missing, unexpected and mis-shaped keys for `config`."""
    expected = expected_codec_state_dict_shapes(config)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} {tuple(state[k].shape)} {str(state[k].dtype).removeprefix('torch.')}"
        f" (expected {shape} {str(dtype).removeprefix('torch.')})"
        for k, (shape, dtype) in expected.items()
        if k in state and (tuple(state[k].shape) != shape or not _compatible(state[k].dtype, dtype))
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(title: str, items: list[str]) -> str:
        more = f", ... ({len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else ""
        return f"{len(items)} {title}: " + ", ".join(items[:_LIST_LIMIT]) + more

    parts = [
        listing(t, i)
        for t, i in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mismatched))
        if i
    ]
    raise UserError(
        f"{path}: does not match the {config.name} codec layout ({len(expected)} keys): " + "; ".join(parts)
    )


def load_codec(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    config: CodecConfig | None = None,
    encode_only: bool = False,
) -> Codec:
    """Load `codec.pth` into a `Codec` in eval mode on `device` (float32, weights_only=True).

    The config is inferred from the tensor shapes unless given. The whole key set is validated
    even with `encode_only=True`, which then skips the decoder, post-module and up-sampling weights
    (about half of the file) so extraction needs half the memory.
    """
    path = resolve_codec_path(path)
    state = read_codec_state_dict(path)
    if config is None:
        config = infer_codec_config(state, path)
    check_codec_state_dict(state, config, path)

    with torch.device("meta"):
        model = Codec(config)
    if encode_only:
        model.drop_decoder()
    model = model.to_empty(device=device)
    wanted = model.state_dict().keys()
    # load_state_dict copies (and casts to the parameters' float32) from the memory-mapped file.
    model.load_state_dict({k: v for k, v in state.items() if k in wanted}, strict=True)
    log.info(
        "loaded %s codec from %s (%d tensors%s) on %s",
        config.name,
        path,
        len(state),
        ", encoder only" if encode_only else "",
        device,
    )
    return model.eval()


def check_codec_file(path: str | os.PathLike) -> tuple[Path, CodecConfig]:
    """Check that `path` (a `codec.pth` or a folder holding one) is a complete codec, reading shapes only.

    Memory-mapped, so it costs a fraction of a second even for S1-mini: commands call it before any
    other work, so a wrong path fails at once instead of after (or instead of) the work.
    """
    path = resolve_codec_path(path)
    state = read_codec_state_dict(path)
    config = infer_codec_config(state, path)
    check_codec_state_dict(state, config, path)
    return path, config
