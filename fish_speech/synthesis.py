"""Text -> speech with a checkpoint folder: prompt, DualAR generation, codec decoding, WAV + codes.

The Python API (the `fish-speech synthesize` command and evaluation use it):

    voice = load_voice("checkpoints/merged", device="cpu", precision="float32")
    apply_lora(voice, "results/checkpoints/step_000100.ckpt")   # optional, in memory; again for another one
    refs = voice.references(audio=["ref.wav"], texts=["what ref.wav says"])
    utts = synthesize(voice, ["Hello.", "A second sentence."], refs, SamplingSettings(), seed=42, batch_size=8)
    write_utterance(utts[0], "out.wav")   # out.wav (16-bit PCM, 44.1 kHz) + out.npy (codes) atomically

Each utterance is generated as upstream generates one request (`generate_long` with `--seed`), so
with float32 on CPU its codes equal upstream's; rows of a batch use their own random generators
(equal to batch 1). Text longer than `max_chars` is split at sentence boundaries into pieces that are
generated with the same references (as rows of the same batch) and joined with a 0.25 s pause.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fish_speech.devices import resolve_device
from fish_speech.errors import UserError
from fish_speech.layout import CODEC_FILE
from fish_speech.text2semantic.generate import (
    OUTPUT_RESERVE,
    SamplingSettings,
    compiled_decode_frame,
    generate,
    seeded_generators,
)
from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG
from fish_speech.text2semantic.prompt import Reference, encode_prompt, load_references

log = logging.getLogger(__name__)

SAMPLE_RATE = 44100
PAUSE_SECONDS = 0.25
# Pieces of long text: upstream's --chunk-length default (which upstream accepts but never uses).
DEFAULT_MAX_CHARS = 300
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Voice:
    """A loaded checkpoint: text-to-semantic model, tokenizer, codec (loaded on first use)."""

    checkpoint: Path
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    lora: str | None = None
    _codec: object = None

    @property
    def codec(self):
        if self._codec is None:
            from fish_speech.codec.checkpoint import load_codec

            self._codec = load_codec(self.checkpoint / CODEC_FILE, device=self.device)
        return self._codec

    def references(
        self, audio: Sequence[str] = (), texts: Sequence[str] = (), reference_dir: str | None = None
    ) -> list[Reference]:
        """References from audio files / `.npy` codes with transcripts and/or a speaker folder."""
        c = self.model.config
        return load_references(
            list(audio), list(texts), reference_dir, lambda: self.codec, c.num_codebooks, c.codebook_size
        )


@dataclass
class Utterance:
    """One synthesized text: codes `(10, frames)`, float32 audio, and what the manifest records."""

    text: str
    codes: np.ndarray
    audio: np.ndarray
    pieces: list[str]
    stops: list[str]
    generation_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return int(self.codes.shape[1])

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto = bfloat16 on CUDA (upstream's), float32 on CPU (exact golden parity, and faster there)."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r}: use auto, bfloat16, float16 or float32")
    return PRECISIONS[precision]


def load_voice(checkpoint: str | os.PathLike, device: str = "auto", precision: str = "auto") -> Voice:
    """Load a checkpoint folder (base or merged layout, with `codec.pth`) for synthesis."""
    from fish_speech.text2semantic.checkpoint import REQUIRED_FILES, check_dir, load_model, load_tokenizer

    path = check_dir(checkpoint, (*REQUIRED_FILES, CODEC_FILE))
    dev = resolve_device(device)
    dtype = resolve_precision(precision, dev)
    model = load_model(path, device=dev, dtype=dtype)
    return Voice(path, model, load_tokenizer(path), dev, dtype)


def apply_lora(
    voice: Voice,
    lora: str | os.PathLike,
    lora_config: str = DEFAULT_LORA_CONFIG,
    train_output: str | os.PathLike | None = None,
) -> Path:
    """Load the voice's base weights with a LoRA checkpoint folded in, in memory (no merged folder).

    Exactly what `merge-lora` + loading the merged folder gives: the sum is formed from the base
    `model.pth` tensors in float32 and rounded to that file's dtype, then cast to the voice's dtype.
    Call again with another checkpoint to switch (always from the base weights).
    """
    from fish_speech.text2semantic.checkpoint import MODEL_FILE, read_state_dict
    from fish_speech.text2semantic.lora import merge_lora_weights, read_lora_checkpoint, resolve_lora_spec
    from fish_speech.text2semantic.merge import _check_recorded_config, _output_dtype, resolve_lora_weight

    spec = resolve_lora_spec(lora_config)
    path = resolve_lora_weight(lora, train_output)
    _check_recorded_config(path, spec)
    base = read_state_dict(voice.checkpoint / MODEL_FILE)
    merged = merge_lora_weights(
        base, read_lora_checkpoint(path), spec, dtype=_output_dtype("base", base), source=str(path)
    )
    with torch.no_grad():
        params = voice.model.state_dict()
        for key, value in merged.items():
            params[key].copy_(value.to(params[key].dtype))
    voice.lora = str(path)
    log.info("applied LoRA %s (%s) to %s in memory", path, spec.name, voice.checkpoint)
    return path


# ---- long text ---------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?。！？;；…])\s+|(?<=[。！？；…])")
_CLAUSE_END = re.compile(r"(?<=[,，、:：])\s*")


def split_text(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """Pieces of at most `max_chars` characters, cut at sentence ends (then clauses, then spaces).

    Text that fits stays whole (one generation, exactly as upstream); `max_chars` 0 never splits.
    """
    text = text.strip()
    if max_chars <= 0 or len(text) <= max_chars:
        return [text] if text else []

    def units(s: str, level: int) -> list[str]:
        if len(s) <= max_chars:
            return [s]
        if level == 0:
            parts = _SENTENCE_END.split(s)
        elif level == 1:
            parts = _CLAUSE_END.split(s)
        elif level == 2:
            parts = s.split(" ")
        else:
            return [s[i : i + max_chars] for i in range(0, len(s), max_chars)]
        parts = [p.strip() for p in parts if p.strip()]
        if len(parts) <= 1:
            return units(s, level + 1)
        return [u for p in parts for u in units(p, level + 1)]

    pieces: list[str] = []
    for unit in units(text, 0):
        joiner = "" if pieces and re.search(r"[\u3000-\u9fff\uff00-\uffef]$", pieces[-1]) else " "
        if pieces and len(pieces[-1]) + len(joiner) + len(unit) <= max_chars:
            pieces[-1] = pieces[-1] + joiner + unit
        else:
            pieces.append(unit)
    return pieces


# ---- synthesis ---------------------------------------------------------------------------------------


def build_prompts(voice: Voice, texts: Sequence[str], references: list[Reference], max_chars: int):
    """Per text its pieces and their prompts; UserError for empty text or a prompt over the limit."""
    c = voice.model.config
    limit = c.max_seq_len - OUTPUT_RESERVE if c.max_seq_len > OUTPUT_RESERVE else c.max_seq_len - 1
    ref_only = (
        encode_prompt(voice.tokenizer, ".", references, c.num_codebooks).shape[1] - 1 if references else 0
    )
    if ref_only and ref_only >= limit:
        raise UserError(
            f"the reference prompt alone is {ref_only} tokens, the limit is {limit} "
            f"(max_seq_len {c.max_seq_len} minus {c.max_seq_len - limit} for the output): use fewer or shorter references"
        )
    out = []
    for i, text in enumerate(texts):
        if not text.strip():
            raise UserError(f"text {i + 1} is empty")
        pieces = split_text(text, max_chars)
        prompts = [encode_prompt(voice.tokenizer, p, references, c.num_codebooks) for p in pieces]
        for piece, prompt in zip(pieces, prompts, strict=True):
            if prompt.shape[1] > limit:
                raise UserError(
                    f"text {i + 1}: the prompt is {prompt.shape[1]} tokens (references {ref_only}, text "
                    f"{prompt.shape[1] - ref_only}), the limit is {limit}; "
                    f"shorten the text ({len(piece)} characters) or the references"
                )
        out.append((pieces, prompts))
    return out


def decode(voice: Voice, codes: np.ndarray | torch.Tensor) -> np.ndarray:
    """Codes `(10, F)` -> float32 audio `(F * 2048,)` at 44.1 kHz with the checkpoint's codec."""
    from fish_speech.codec.decode import decode_codes

    codes = np.asarray(codes)
    if codes.shape[1] == 0:
        return np.zeros(0, dtype=np.float32)
    return decode_codes(voice.codec, codes)


def synthesize(
    voice: Voice,
    texts: Sequence[str],
    references: list[Reference] | None = None,
    settings: SamplingSettings | None = None,
    seed: int | Sequence[int] = 42,
    batch_size: int = 1,
    max_chars: int = DEFAULT_MAX_CHARS,
    compile: bool = False,
    per_row_rng: bool | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> list[Utterance]:
    """Synthesize `texts` (one utterance each) with the same references and settings; batched.

    `seed`: one for all, or one per text (every piece of a text uses its text's seed).
    `per_row_rng` (default: on CPU): one generator per row, so batch results equal batch 1 and each
    row equals an upstream run with `torch.manual_seed(seed)`. Off, rows share the global generator,
    seeded once with the first seed (what CUDA graphs want; results then depend on the batch).
    `progress(kind, n)` is told about finished decode steps ("token") and utterances ("utterance").
    """
    settings = settings or SamplingSettings()
    settings.validate()
    references = references or []
    seeds = [int(seed)] * len(texts) if isinstance(seed, int) else [int(s) for s in seed]
    if len(seeds) != len(texts):
        raise ValueError(f"{len(seeds)} seeds for {len(texts)} texts")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}")
    if per_row_rng is None:
        per_row_rng = voice.device.type == "cpu" and not compile
    decode_fn = compiled_decode_frame() if compile else None
    planned = build_prompts(voice, texts, references, max_chars)
    rows = [(t, j, p, seeds[t]) for t, (_, prompts) in enumerate(planned) for j, p in enumerate(prompts)]
    results: dict[tuple[int, int], object] = {}
    row_seconds: dict[tuple[int, int], float] = {}
    if not per_row_rng:
        torch.manual_seed(seeds[0] if seeds else 0)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        gens = seeded_generators([r[3] for r in chunk], voice.device) if per_row_rng else None
        t0 = time.perf_counter()
        outs = generate(
            voice.model,
            [r[2] for r in chunk],
            settings,
            voice.tokenizer.im_end_id,
            generators=gens,
            decode_fn=decode_fn,
            # one cache size for every call, so the compiled step is captured once (upstream's size)
            cache_length=voice.model.config.max_seq_len if compile else None,
            progress=(lambda n: progress("token", 1)) if progress else None,
        )
        elapsed = time.perf_counter() - t0
        for r, o in zip(chunk, outs, strict=True):
            results[(r[0], r[1])] = o
            row_seconds[(r[0], r[1])] = elapsed / len(chunk)
    if not compile:  # a compiled step keeps its caches for the next call
        voice.model.clear_caches()

    utterances = []
    pause = np.zeros(int(PAUSE_SECONDS * SAMPLE_RATE), dtype=np.float32)
    for t, (pieces, _) in enumerate(planned):
        gens_t = [results[(t, j)] for j in range(len(pieces))]
        t0 = time.perf_counter()
        audios = [decode(voice, g.codes.numpy()) for g in gens_t]
        decode_seconds = time.perf_counter() - t0
        joined: list[np.ndarray] = []
        for j, a in enumerate(audios):
            if j:
                joined.append(pause)
            joined.append(a)
        codes = np.concatenate([g.codes.numpy() for g in gens_t], axis=1).astype(np.int64)
        utt = Utterance(
            text=texts[t],
            codes=codes,
            audio=np.concatenate(joined) if joined else np.zeros(0, np.float32),
            pieces=pieces,
            stops=[g.stop for g in gens_t],
            generation_seconds=sum(row_seconds[(t, j)] for j in range(len(pieces))) + decode_seconds,
            extra={"seed": seeds[t], "prompt_tokens": [g.prompt_length for g in gens_t]},
        )
        if utt.frames == 0:
            log.warning("text %d: the model stopped at once; the audio is empty", t + 1)
        utterances.append(utt)
        if progress:
            progress("utterance", 1)
    return utterances


def write_wav(path: str | os.PathLike, audio: np.ndarray) -> None:
    """16-bit PCM mono WAV at 44.1 kHz, written atomically (soundfile, as upstream's CLI)."""
    import soundfile as sf

    from fish_speech.fileio import atomic_path

    with atomic_path(path, suffix=".wav") as tmp:
        sf.write(tmp, audio, SAMPLE_RATE, subtype="PCM_16", format="WAV")


def write_utterance(utt: Utterance, wav_path: str | os.PathLike) -> tuple[Path, Path]:
    """Write `X.wav` and the codes as `X.npy` (int64, (10, frames)) beside it; returns both paths."""
    from fish_speech.fileio import atomic_path

    wav_path = Path(wav_path)
    npy_path = wav_path.with_suffix(".npy")
    with atomic_path(npy_path, suffix=".npy") as tmp:
        np.save(tmp, utt.codes)
    write_wav(wav_path, utt.audio)
    return wav_path, npy_path
