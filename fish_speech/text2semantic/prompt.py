"""Inference prompts: plain text, or voice cloning from reference clips with their transcripts.

Upstream's inference template (fish-speech d3df505, `generate_long` + `ContentSequence.encode_for_inference`),
every part tokenized on its own:

    <|interleave|>
    for each reference:  "<|speaker:0|>" + transcript   (BPE text)   codes (one semantic token per frame)   <|im_end|>
    "<|speaker:0|>" + target text                                      (nothing after it)

As a `(C+1, T)` matrix: row 0 the ids (at reference frames `<|semantic:c|>` with c = codebook 0),
rows 1..C the reference codes at those columns and 0 elsewhere. This is not the training template
(`samples.py`), which fine-tuning uses; it is what upstream's inference feeds the released model.

References come from an audio file (encoded with our codec encoder, after mono mix and resampling
to 44.1 kHz), from a `.npy` of codes `(C, frames)`, or from a speaker folder (`references_from_dir`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fish_speech.audio import AUDIO_EXTENSIONS
from fish_speech.errors import UserError
from fish_speech.text2semantic.tokenizer import FishTokenizer

log = logging.getLogger(__name__)

SPEAKER_TAG = "<|speaker:0|>"  # plain text for the tokenizer (not a special token)
INTERLEAVE = "<|interleave|>"
IM_END = "<|im_end|>"
# A reference clip longer than this is refused: upstream advises 10-30 s, and longer prompts only
# eat the context (and the codec encoder's memory).
MAX_REFERENCE_SECONDS = 30.0
# --reference-dir picks clips of this length (seconds) first, at most this many.
REFERENCE_DIR_SECONDS = (3.0, 10.0)
REFERENCE_DIR_MAX_CLIPS = 3
SAMPLE_RATE = 44100


@dataclass
class Reference:
    """One voice-cloning reference: its transcript and its codes `(C, frames)` int64."""

    text: str
    codes: np.ndarray
    source: str = ""


def check_reference_codes(
    codes: np.ndarray, num_codebooks: int, codebook_size: int, source: str
) -> np.ndarray:
    """Codes `(C, F)`, integers in range for the model (upstream broadcasts and aliases instead)."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != num_codebooks or codes.shape[1] == 0:
        raise UserError(
            f"{source}: expected reference codes shaped ({num_codebooks}, frames), got {codes.shape}"
        )
    if not np.issubdtype(codes.dtype, np.integer):
        raise UserError(f"{source}: expected integer codes, got {codes.dtype}")
    if codes.min() < 0 or codes.max() >= codebook_size:
        raise UserError(
            f"{source}: code values must lie in 0..{codebook_size - 1}, got {codes.min()}..{codes.max()}"
        )
    return codes.astype(np.int64)


def encode_prompt(
    tokenizer: FishTokenizer, text: str, references: list[Reference], num_codebooks: int
) -> Tensor:
    """The `(C+1, T)` int64 prompt of `text` with `references` (upstream's inference template)."""
    if not text.strip():
        raise UserError("the text to synthesize is empty")
    columns: list[Tensor] = []

    def text_part(s: str) -> None:
        ids = torch.tensor(tokenizer.encode(s), dtype=torch.long)
        part = torch.zeros(num_codebooks + 1, len(ids), dtype=torch.long)
        part[0] = ids
        columns.append(part)

    text_part(INTERLEAVE)
    for ref in references:
        if not ref.text.strip():
            raise UserError(f"{ref.source or 'reference'}: the reference has no transcript")
        text_part(SPEAKER_TAG)
        text_part(ref.text)
        codes = torch.from_numpy(np.asarray(ref.codes, dtype=np.int64))
        if int(codes[0].max()) >= tokenizer.num_semantic_tokens:
            raise UserError(f"{ref.source}: semantic code {int(codes[0].max())} has no token")
        part = torch.cat([tokenizer.semantic_begin_id + codes[:1], codes], dim=0)
        columns.append(part)
        text_part(IM_END)
    text_part(SPEAKER_TAG)
    text_part(text)
    return torch.cat(columns, dim=1)


# ---- where references come from ----------------------------------------------------------------------


def reference_from_codes(
    path: str | os.PathLike, text: str, num_codebooks: int, codebook_size: int
) -> Reference:
    """A reference from a `.npy` of codes (as `extract-vq` writes)."""
    path = Path(path)
    try:
        codes = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read reference codes ({e})") from None
    return Reference(text, check_reference_codes(codes, num_codebooks, codebook_size, str(path)), str(path))


def encode_reference_audio(codec, path: str | os.PathLike) -> np.ndarray:
    """Codes `(10, frames)` of an audio file: mono mix, resampled to 44.1 kHz, our codec encoder (float32)."""
    from fish_speech.audio import downmix, load_audio, resample

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: reference audio not found")
    data, sr = load_audio(path)
    seconds = data.shape[1] / sr
    if seconds > MAX_REFERENCE_SECONDS:
        raise UserError(
            f"{path}: reference audio is {seconds:.1f} s long; the limit is {MAX_REFERENCE_SECONDS:.0f} s"
        )
    if data.shape[1] == 0:
        raise UserError(f"{path}: reference audio is empty")
    wav = torch.from_numpy(downmix(data))
    if sr != SAMPLE_RATE:
        wav = resample(wav, sr, SAMPLE_RATE)
    codes, _ = codec.encode(wav.to(codec.device)[None, None])
    return codes[0].cpu().numpy().astype(np.int64)


def read_transcript(path: Path) -> str:
    lab = path.with_suffix(".lab")
    try:
        return lab.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{lab}: cannot read transcript ({e})") from None


def pick_reference_clips(directory: str | os.PathLike) -> list[Path]:
    """The clips `--reference-dir` uses: those with a non-empty `.lab`, 3-10 s long first (name order),
    then shorter ones (longest first); at most 3. Clips over 30 s or unreadable are never used."""
    import soundfile as sf

    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: reference folder not found")
    in_range, shorter = [], []
    lo, hi = REFERENCE_DIR_SECONDS
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in AUDIO_EXTENSIONS or path.name.startswith("."):
            continue
        if not read_transcript(path):
            continue
        try:
            seconds = sf.info(str(path)).duration
        except Exception:  # unreadable: not a candidate
            log.warning("%s: unreadable, not used as a reference", path)
            continue
        if lo <= seconds <= hi:
            in_range.append(path)
        elif seconds < lo:
            shorter.append((seconds, path))
    chosen = in_range + [p for _, p in sorted(shorter, key=lambda sp: -sp[0])]
    if not chosen:
        raise UserError(
            f"{directory}: no audio clip with a transcript (.lab) of at most {hi:.0f} s "
            "(pass a speaker folder of the training layout)"
        )
    return chosen[:REFERENCE_DIR_MAX_CLIPS]


def load_references(
    audio: list[str],
    texts: list[str],
    reference_dir: str | None,
    codec,
    num_codebooks: int,
    codebook_size: int,
) -> list[Reference]:
    """References from `--reference-audio`/`--reference-text` pairs and/or `--reference-dir`.

    `codec` (a loaded `Codec`, or a callable returning one) is only needed for audio files.
    """
    if len(audio) != len(texts):
        raise UserError(
            f"{len(audio)} --reference-audio but {len(texts)} --reference-text: give one transcript per reference"
        )
    items = [(Path(a), t, False) for a, t in zip(audio, texts, strict=True)]
    if reference_dir:
        items += [(p, read_transcript(p), True) for p in pick_reference_clips(reference_dir)]
    refs = []
    for path, text, from_dir in items:
        if not text.strip():
            raise UserError(f"{path}: the reference has no transcript")
        if path.suffix == ".npy":
            refs.append(reference_from_codes(path, text, num_codebooks, codebook_size))
            continue
        codes_path = path.with_suffix(".npy")
        if from_dir and codes_path.is_file():  # extract-vq's codes beside a training clip
            refs.append(reference_from_codes(codes_path, text, num_codebooks, codebook_size))
            continue
        model = codec() if callable(codec) and not isinstance(codec, torch.nn.Module) else codec
        codes = encode_reference_audio(model, path)
        refs.append(
            Reference(text, check_reference_codes(codes, num_codebooks, codebook_size, str(path)), str(path))
        )
        log.info("reference %s: %d frames", path, codes.shape[1])
    return refs
