"""Random tiny checkpoints in the real base-model layout, for tests, the demo and `fetch-weights tiny`.

Every random writer lives here: the codec (`write_random_codec`), the text-to-semantic model
(`write_random_t2s`), the tokenizer (`write_tiny_tokenizer`) and the whole folder
(`write_tiny_checkpoint`). The text-to-semantic config is the golden vectors' tiny one with the codebook
layout widened to the codec's (10 codebooks of up to 4096 codes), so codes extracted with the tiny codec
train the tiny model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections import Counter
from pathlib import Path

import regex
import torch

from fish_speech.codec.checkpoint import expected_codec_state_dict_shapes
from fish_speech.codec.model import Codec, CodecConfig
from fish_speech.fileio import atomic_path
from fish_speech.layout import CODEC_FILE, MODEL_FILE
from fish_speech.text2semantic.checkpoint import CHECKPOINT_DTYPE, save_state_dict, write_config
from fish_speech.text2semantic.model import DualARTransformer, ModelConfig
from fish_speech.text2semantic.tokenizer import DEFAULT_SPECIAL_TOKENS, SPLIT_PATTERN, FishTokenizer

log = logging.getLogger(__name__)


def tiny_codec_config() -> CodecConfig:
    """The codec config of a tiny checkpoint (the golden tiny codec)."""
    return CodecConfig.tiny()


def tiny_model_config() -> ModelConfig:
    """The text-to-semantic config of a tiny checkpoint, matching `tiny_codec_config()`'s codes."""
    codec = tiny_codec_config()
    return dataclasses.replace(
        ModelConfig.tiny(),
        num_codebooks=1 + codec.n_codebooks,
        codebook_size=max(codec.semantic_codebook_size, codec.codebook_size),
    )


def write_tiny_checkpoint(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Write `model.pth`, `config.json`, `tokenizer.tiktoken`, `special_tokens.json` and `codec.pth`
    with random weights (deterministic for a seed) into `out_dir`; every file is written atomically."""
    out = Path(out_dir)
    write_random_t2s(out, tiny_model_config(), seed=seed)
    write_random_codec(out / CODEC_FILE, tiny_codec_config(), seed=seed)
    return out


# ----------------------------------------------------------------------------- the codec


@torch.no_grad()
def _perturb(model: Codec, gen: torch.Generator) -> None:
    """Replace init constants by seeded noise so random codecs behave like trained ones (varied codes)."""

    def rand_like(p: torch.Tensor) -> torch.Tensor:
        return torch.rand(p.shape, generator=gen)

    def randn_like(p: torch.Tensor) -> torch.Tensor:
        return torch.randn(p.shape, generator=gen)

    for name, p in model.named_parameters():
        if name.endswith(".alpha"):
            p.copy_(0.25 + 1.5 * rand_like(p))
        elif name.endswith(".gamma"):
            p.copy_(0.05 + 0.25 * rand_like(p))
        elif name.endswith("norm.weight"):
            p.add_(0.1 * randn_like(p))
        elif name.endswith(".bias"):
            p.add_(0.02 * randn_like(p))
        elif name.endswith(("original0", "weight_g")):
            p.mul_(torch.exp(0.2 * randn_like(p)))


@torch.no_grad()
def _calibrate(model: Codec, gen: torch.Generator, seconds: float) -> None:
    """Shift each VQ stage's in_proj bias so its projection is zero-mean on a synthetic signal.

    Without this, random projections collapse onto a handful of codebook entries.
    """
    sr = model.config.sample_rate
    n = int(seconds * sr) // model.config.frame_length * model.config.frame_length
    t = torch.arange(n) / sr
    f0 = 120.0 + 60.0 * torch.sin(2 * math.pi * 0.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / sr
    audio = (
        0.3
        * sum(torch.sin(k * phase) / k for k in range(1, 6))
        * (0.6 - 0.4 * torch.cos(2 * math.pi * 3 * t))
    )
    audio = audio + 0.01 * torch.randn(n, generator=gen)
    q = model.quantizer
    z = q.pre_module(q.downsample(model.encoder(audio.view(1, 1, -1).float())))
    residual = z
    stages = [*q.semantic_quantizer.quantizers, *q.quantizer.quantizers]
    for i, stage in enumerate(stages):
        stage.in_proj.bias.sub_(stage.in_proj(residual).mean(dim=(0, 2)))
        _, out = stage(residual)
        residual = z - out if i == 0 else residual - out


def write_random_codec(
    path: str | os.PathLike, config: CodecConfig | None = None, seed: int = 0, calibrate_seconds: float = 2.0
) -> Path:
    """Write a random codec for `config` (default tiny) in the real layout: flat mapping, upstream key
    names and order, float32 parameters, bf16 RoPE tables (upstream's formula), bool causal masks.

    Deterministic for a given seed. Written atomically. Returns the path.
    """
    config = config or CodecConfig.tiny()
    path = Path(path)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Codec(config).eval()
    _perturb(model, gen)
    if calibrate_seconds > 0:
        _calibrate(model, gen, calibrate_seconds)
    state = model.state_dict()
    expected = expected_codec_state_dict_shapes(config)
    state = {k: state[k].contiguous() for k in expected}
    with atomic_path(path, suffix=".pth") as tmp:
        torch.save(state, tmp)
    log.info("wrote random %s codec (%d tensors, seed %d) to %s", config.name, len(state), seed, path)
    return path


# ----------------------------------------------------------------------------- the text-to-semantic model


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


# ----------------------------------------------------------------------------- the tokenizer


# A small English/multilingual corpus for the tiny tokenizer's merges.
_TINY_CORPUS = (
    "Speak out the provided text. The quick brown fox jumps over the lazy dog. "
    "Hello, world! This is a test of the speaker and the assistant. The model reads text and "
    "writes speech; the voice sounds natural when the training data is clean. "
    "She said that they would be there in the morning, and then the market opened. "
    "We have been waiting since nine o'clock, but it still hasn't arrived. "
    "A short clip in a nested folder; another line of a transcript. Numbers like 123 and 2024. "
    "Good evening everyone, welcome back to the show. Tonight we talk about music, weather and "
    "travel: where to go, what to pack, and how to listen to the people around you. "
    "<|speaker:user|> <|speaker:assistant|> 你好，世界。今天天气很好。こんにちは。Привет, мир. "
) * 2


def train_tiny_bpe(num_merges: int = 256, corpus: str = _TINY_CORPUS) -> dict[bytes, int]:
    """Byte-level BPE with `256 + num_merges` ranks learned greedily from `corpus` (deterministic)."""
    pieces = Counter(m.group(0) for m in regex.finditer(SPLIT_PATTERN, corpus))
    words = {piece: [bytes([b]) for b in piece.encode("utf-8")] for piece in pieces}
    ranks = {bytes([b]): b for b in range(256)}
    while len(ranks) < 256 + num_merges:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for piece, parts in words.items():
            for a, b in zip(parts, parts[1:], strict=False):
                pairs[(a, b)] += pieces[piece]
        candidates = [(n, pair) for pair, n in pairs.items() if pair[0] + pair[1] not in ranks]
        if not candidates:
            break
        # Most frequent pair; ties broken by the smallest bytes, for a stable file.
        _, (a, b) = min(candidates, key=lambda x: (-x[0], x[1]))
        merged = a + b
        ranks[merged] = len(ranks)
        for piece, parts in words.items():
            out, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            words[piece] = out
    # Pad with unique filler tokens if the corpus ran out of pairs, so the size is always 256 + num_merges.
    filler = 0
    while len(ranks) < 256 + num_merges:
        token = b"\xff\xfe" + filler.to_bytes(4, "big")
        filler += 1
        if token not in ranks:
            ranks[token] = len(ranks)
    return ranks


def write_tiny_tokenizer(directory: str | os.PathLike, num_merges: int = 256) -> FishTokenizer:
    """Write a tiny tokenizer (512 ranks by default, the built-in special tokens) in the real file format."""
    tokenizer = FishTokenizer(train_tiny_bpe(num_merges), DEFAULT_SPECIAL_TOKENS)
    tokenizer.save(directory)
    return tokenizer
