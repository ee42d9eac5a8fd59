"""Objective scores of synthesized speech: error rates of an ASR transcript, speaker similarity, duration.

Text normalisation (applied to both the reference text and the ASR transcript before any error rate):
1. Unicode NFKC (full-width forms become ASCII, ligatures split), then case folding;
2. every character of a Unicode punctuation (P*) or symbol (S*) category becomes a space, except an
   apostrophe or hyphen between two letters (`don't`, `e-mail` stay one word);
3. whitespace runs collapse to one space; leading and trailing space is dropped.
Numbers are not spelled out ("3" and "three" differ): both sides come from the same kind of text, so
this costs every candidate alike.

Tokens: WER splits the normalised text at spaces and makes every character of a script written without
spaces (Han, Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) a word of its own, so Chinese or Japanese
text gets a meaningful WER too. CER counts characters of the normalised text with its spaces removed,
so a missed word boundary is not an error and languages with and without spaces score alike.
Both rates are edit distance / reference length (they can exceed 1 when the transcript is longer);
an empty reference scores 0 against an empty transcript and 1 otherwise.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np

_SPACES = re.compile(r"\s+")
# Scripts written without spaces between words: each character counts as a word.
_NO_SPACE_SCRIPTS = (
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3100, 0x312F),  # Bopomofo
    (0x31F0, 0x31FF),  # Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x20000, 0x2FA1F),  # CJK extensions B-F, compatibility supplement
)


def _no_space_char(ch: str) -> bool:
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _NO_SPACE_SCRIPTS)


def normalize_text(text: str) -> str:
    """The text as error rates compare it (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch)[0] in "PS":
            inner = ch in "'’-" and 0 < i < len(text) - 1 and text[i - 1].isalpha() and text[i + 1].isalpha()
            out.append("'" if inner and ch == "’" else ch if inner else " ")
        else:
            out.append(ch)
    return _SPACES.sub(" ", "".join(out)).strip()


def words(text: str) -> list[str]:
    """WER tokens of already normalised text: space-separated words, one per no-space-script character."""
    tokens: list[str] = []
    for word in text.split():
        current = ""
        for ch in word:
            if _no_space_char(ch):
                if current:
                    tokens.append(current)
                    current = ""
                tokens.append(ch)
            else:
                current += ch
        if current:
            tokens.append(current)
    return tokens


def characters(text: str) -> list[str]:
    """CER tokens of already normalised text: its characters without spaces."""
    return [ch for ch in text if not ch.isspace()]


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance (substitutions, insertions, deletions all cost 1)."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1]


def _rate(ref: Sequence, hyp: Sequence) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    return edit_distance(ref, hyp) / len(ref)


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of `hypothesis` against `reference` after `normalize_text`."""
    return _rate(characters(normalize_text(reference)), characters(normalize_text(hypothesis)))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` after `normalize_text`."""
    return _rate(words(normalize_text(reference)), words(normalize_text(hypothesis)))


def cosine_similarity(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Cosine of the angle between two embeddings (0 when either is the zero vector)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings of different sizes: {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def centroid(embeddings: Iterable[np.ndarray]) -> np.ndarray:
    """Mean of the unit-length embeddings: the speaker's voice as a comparison target."""
    rows = [np.asarray(e, dtype=np.float64).ravel() for e in embeddings]
    if not rows:
        raise ValueError("no embeddings")
    unit = [r / n if (n := np.linalg.norm(r)) > 0 else r for r in rows]
    return np.mean(unit, axis=0)


def duration_ratio(synthesized_s: float, real_s: float) -> float | None:
    """Synthesized length / real length (None when the real length is unknown or zero)."""
    if not real_s or real_s <= 0:
        return None
    return synthesized_s / real_s


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are not None or NaN (None when there are none)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None
