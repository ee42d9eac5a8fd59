"""What to synthesize: the held-out validation clips `train` scored, per speaker, and a prompt for each.

`train` holds out the last `round(n × val_fraction)` usable sentences (at least 1, at most n - 2) of every
speaker with n ≥ 3 (`fish_speech.text2semantic.training.data.split_validation`). Evaluation rebuilds that
split from the clip folder (`--data`, the folder build-dataset packed: clips, `.lab` and `.npy` codes
beside them or, as `build-dataset --codes`, under code folders at the clips' relative paths)
with the run's own `val_fraction` and `max_length` (from its `summary.json`), through the same
functions, so the sentences are exactly the ones the validation loss was computed on.

The reference prompt of a speaker is one of its *training* clips: the clip of 3–10 s closest to 6 s
(else the longest usable one), never a scored clip. Sentences are taken round-robin over speakers, in
clip order, up to `--sentences`.

Fallback when a speaker has no held-out clip (fewer than 3 clips, or `--val-fraction 0`): its last
training clip is scored instead, flagged `seen_in_training` in every output (its score is optimistic
for fine-tuned checkpoints), and the prompt is another of its clips. A speaker with a single clip
cannot be scored (the prompt would be the scored clip itself) and is reported as skipped.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fish_speech.errors import UserError

log = logging.getLogger(__name__)

FRAME_SECONDS = 2048 / 44100  # one frame of codes
PROMPT_SECONDS = (3.0, 10.0)
PROMPT_TARGET_SECONDS = 6.0


@dataclass
class ClipRef:
    """One usable clip: speaker, transcript as trained on, codes and the audio file beside them."""

    speaker: str
    text: str
    codes_path: Path
    audio_path: Path | None
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames * FRAME_SECONDS

    def codes(self) -> np.ndarray:
        return np.load(self.codes_path, allow_pickle=False)


@dataclass
class EvalSet:
    """Sentences to score, the prompt clip and all real held-out clips of each speaker, and notes."""

    sentences: list[ClipRef]
    prompts: dict[str, ClipRef]
    references: dict[str, list[ClipRef]]  # real clips a speaker's similarity is measured against
    seen_in_training: set[str] = field(default_factory=set)  # speakers scored on a training clip
    skipped: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def read_train_summary(train_output: str | os.PathLike) -> dict:
    """The `summary.json` of a train output folder; UserError when it is missing or unreadable."""
    path = Path(train_output) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(
            f"{path}: not found (is {train_output} the folder `fish-speech train` wrote?)"
        ) from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e})") from e


def _audio_beside(codes: Path, data_dir: Path, code_roots: Sequence[Path]) -> Path | None:
    """The clip of a codes file: beside it, or (codes under a `--codes` folder) at its path under `data_dir`."""
    from fish_speech.dataset.build_dataset import AUDIO_EXTENSIONS

    stem = codes
    for root in code_roots:
        if codes.is_relative_to(root):
            stem = data_dir / codes.relative_to(root)
            break
    for ext in AUDIO_EXTENSIONS:
        for candidate in (stem.with_suffix(ext), stem.with_suffix(ext.upper())):
            if candidate.is_file():
                return candidate
    return None


def _usable_groups(
    data_dir: Path,
    tokenizer,
    max_length: int,
    num_codebooks: int,
    codebook_size: int,
    code_roots: Sequence[Path] = (),
):
    """Per speaker: the clips train kept, in order, as (TextData, [ClipRef]) (same checks as train)."""
    from fish_speech.dataset.build_dataset import discover, try_read_codes
    from fish_speech.dataset.protos import Semantics, Sentence, TextData
    from fish_speech.text2semantic.training.data import check_sentences

    skipped: list = []
    groups = discover([data_dir], [".lab"], skipped, code_roots)
    out = []
    for group in groups:
        sentences, clips = [], []
        for clip in group.clips:
            codes = try_read_codes(clip.codes, num_codebooks)
            if isinstance(codes, str):
                continue
            sentences.append(
                Sentence(texts=clip.texts, semantics=[Semantics(values=row) for row in codes.tolist()])
            )
            clips.append(
                ClipRef(
                    group.name,
                    clip.texts[0],
                    clip.codes,
                    _audio_beside(clip.codes, data_dir, code_roots),
                    codes.shape[1],
                )
            )
        data = TextData(source=group.source, name=group.name, sentences=sentences)
        kept, _ = check_sentences([data], tokenizer, max_length, num_codebooks, codebook_size)
        if not kept:
            continue
        # kept sentences are a subsequence of the originals: walk both to keep each one's clip
        refs, i = [], 0
        for s in kept[0].sentences:
            while sentences[i] != s:
                i += 1
            refs.append(clips[i])
            i += 1
        out.append((kept[0], refs))
    return out


def _pick_prompt(clips: list[ClipRef]) -> ClipRef:
    lo, hi = PROMPT_SECONDS
    fitting = [c for c in clips if lo <= c.seconds <= hi]
    if fitting:
        return min(fitting, key=lambda c: abs(c.seconds - PROMPT_TARGET_SECONDS))
    return max(clips, key=lambda c: c.seconds)


def select_sentences(
    data_dir: str | os.PathLike,
    val_fraction: float,
    tokenizer,
    max_length: int,
    num_codebooks: int,
    codebook_size: int,
    max_sentences: int = 8,
    max_references: int = 16,
    code_roots: Sequence[str | os.PathLike] = (),
) -> EvalSet:
    """Rebuild train's validation split from `data_dir` and pick the sentences and prompts (see module doc)."""
    from fish_speech.text2semantic.training.data import split_validation

    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"{data_dir}: data folder not found")
    if max_sentences <= 0:
        raise UserError(f"--sentences must be positive, got {max_sentences}")
    roots = [Path(r) for r in code_roots]
    groups = _usable_groups(data_dir, tokenizer, max_length, num_codebooks, codebook_size, roots)
    if not groups:
        raise UserError(f"{data_dir}: no clip with codes (.npy) and a transcript (.lab) to evaluate on")
    result = EvalSet([], {}, {})
    per_speaker: list[list[ClipRef]] = []
    for data, refs in groups:
        train, val = split_validation([data], val_fraction)
        n_val = len(val[0].sentences) if val else 0
        speaker = data.name
        held_out, training = refs[len(refs) - n_val :] if n_val else [], refs[: len(refs) - n_val]
        if not held_out:
            if len(refs) < 2:
                result.skipped.append(
                    {"speaker": speaker, "reason": "only 1 usable clip: no other clip to prompt with"}
                )
                continue
            held_out, training = [refs[-1]], refs[:-1]
            result.seen_in_training.add(speaker)
            result.notes.append(
                f"speaker {speaker!r}: no held-out clip ({len(refs)} clips, val_fraction {val_fraction}); "
                f"scoring its last training clip {refs[-1].codes_path.name} (seen in training)"
            )
        result.prompts[speaker] = _pick_prompt(training)
        result.references[speaker] = held_out[:max_references]
        per_speaker.append(held_out)
    if not per_speaker:
        raise UserError(
            f"{data_dir}: no speaker can be evaluated ("
            + "; ".join(f"{s['speaker']}: {s['reason']}" for s in result.skipped)
            + ")"
        )
    # round-robin over speakers so every voice is heard before any gets a second sentence
    depth = 0
    while len(result.sentences) < max_sentences and any(depth < len(h) for h in per_speaker):
        for held_out in per_speaker:
            if depth < len(held_out) and len(result.sentences) < max_sentences:
                result.sentences.append(held_out[depth])
        depth += 1
    for note in result.notes:
        log.warning("%s", note)
    return result
