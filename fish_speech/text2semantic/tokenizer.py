"""The text tokenizer of the text-to-semantic model (upstream: `fish_speech/tokenizer.py`, `FishTokenizer`).

A tiktoken BPE read from `tokenizer.tiktoken` (`<base64 bytes> <rank>` lines) plus special tokens
whose ids follow the BPE ranks; `<|semantic:c|>` stands for semantic (audio) code c.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
from pathlib import Path

import tiktoken

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_write_text
from fish_speech.layout import SPECIAL_TOKENS_FILE, TOKENIZER_FILE

log = logging.getLogger(__name__)


# Pre-tokenization regex, alternatives in upstream's order. `\s+(\?!\S)` is upstream's typo for a
# lookahead (it matches whitespace, a literal "?!" and one non-space) and is kept for identical ids.
SPLIT_PATTERN = "|".join(
    [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",
        r"\p{P}",
        r"[^\r\n\p{L}\p{N}]?\p{L}+",
        r"\p{N}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(\?!\S)",
        r"\s+",
    ]
)

NUM_SEMANTIC_TOKENS = 4096
# Upstream's built-in special-token list (ids = number of BPE ranks + position).
DEFAULT_SPECIAL_TOKENS: list[str] = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|pad|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|phoneme_start|>",
    "<|phoneme_end|>",
    "<|tool_call_start|>",
    "<|tool_call_end|>",
    "<|text|>",
    "<|voice|>",
    "<|interleave|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio|>",
    *[f"<|semantic:{c}|>" for c in range(NUM_SEMANTIC_TOKENS)],
]

IM_END = "<|im_end|>"
VOICE = "<|voice|>"
END_OF_TEXT = "<|end_of_text|>"
_ENCODE_CHUNK = 400_000  # characters per tiktoken call, as upstream
# Shape of every built-in special token; no "<", ">" or "|" inside, so such tokens never overlap.
_SPECIAL_CANDIDATE = re.compile(r"<\|[^<>|]*\|>")


def semantic_token(code: int) -> str:
    """The special token standing for semantic code `code`."""
    return f"<|semantic:{code}|>"


def read_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a `tokenizer.tiktoken` file; malformed lines raise UserError naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: tokenizer file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read tokenizer: {e}") from None
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise UserError(f"{path}:{lineno}: expected '<base64> <rank>', got {line!r}")
        token_b64, rank = fields
        if token_b64 == "=":  # upstream writes an empty token as "=" and skips it when reading
            continue
        try:
            ranks[base64.b64decode(token_b64, validate=True)] = int(rank)
        except ValueError as e:
            raise UserError(f"{path}:{lineno}: bad tokenizer entry {line!r}: {e}") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise UserError(f"{path}: BPE ranks must be 0..{len(ranks) - 1}, each exactly once")
    if not all(bytes([b]) in ranks for b in range(256)):
        raise UserError(f"{path}: every single byte must be a token")
    return ranks


def write_ranks(path: str | os.PathLike, ranks: dict[bytes, int]) -> None:
    """Write `tokenizer.tiktoken` as upstream does: one line per rank, in rank order."""
    lines = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        lines.append(f"{base64.b64encode(token).decode() or '='} {rank}\n")
    atomic_write_text(path, "".join(lines))


class FishTokenizer:
    """BPE text tokenizer with special tokens; every special token written in a text is recognised."""

    def __init__(self, ranks: dict[bytes, int], special_tokens: list[str], name: str = "tokenizer") -> None:
        self.num_ranks = len(ranks)
        self.special_tokens = {tok: self.num_ranks + i for i, tok in enumerate(special_tokens)}
        if len(self.special_tokens) != len(special_tokens):
            raise ValueError("duplicate special tokens")
        self._encoding = tiktoken.Encoding(
            name=name, pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens=self.special_tokens
        )
        semantic = [self.special_tokens.get(semantic_token(c)) for c in range(NUM_SEMANTIC_TOKENS)]
        count = next((i for i, tid in enumerate(semantic) if tid is None), len(semantic))
        if count == 0:
            raise ValueError("no <|semantic:N|> special tokens")
        ids = semantic[:count]
        if ids != list(range(ids[0], ids[0] + count)):
            raise ValueError("semantic tokens must have contiguous ids")
        self.semantic_begin_id = ids[0]
        self.semantic_id_end = ids[-1]
        self.num_semantic_tokens = count
        for tok in (IM_END, VOICE, END_OF_TEXT):
            if tok not in self.special_tokens:
                raise ValueError(f"special token {tok} missing")
        self.im_end_id = self.special_tokens[IM_END]
        self.voice_id = self.special_tokens[VOICE]
        self.end_of_text_id = self.special_tokens[END_OF_TEXT]
        self._simple_specials = all(_SPECIAL_CANDIDATE.fullmatch(t) for t in self.special_tokens)

    @property
    def semantic_end_id(self) -> int:
        """Alias of `semantic_id_end` (upstream's name)."""
        return self.semantic_id_end

    @property
    def total_tokens(self) -> int:
        """BPE ranks + special tokens: the model's `vocab_size` must be at least this."""
        return self.num_ranks + len(self.special_tokens)

    @classmethod
    def from_dir(cls, directory: str | os.PathLike) -> FishTokenizer:
        """Load from a checkpoint dir: `tokenizer.tiktoken`, and `special_tokens.json` if present.

        As upstream's folder loader, the special-token list is the key order of `special_tokens.json`
        (its ids are recomputed, not read); without that file the built-in list is used.
        """
        directory = Path(directory)
        ranks = read_ranks(directory / TOKENIZER_FILE)
        specials_path = directory / SPECIAL_TOKENS_FILE
        specials = DEFAULT_SPECIAL_TOKENS
        if specials_path.exists():
            try:
                data = json.loads(specials_path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"{specials_path}: cannot read special tokens: {e}") from None
            if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
                raise UserError(f"{specials_path}: expected a JSON object token -> id")
            specials = list(data)
            mismatched = [k for i, (k, v) in enumerate(data.items()) if v != len(ranks) + i]
            if mismatched:
                log.warning(
                    "%s: %d ids differ from ranks + position (e.g. %s); using ranks + position as upstream",
                    specials_path,
                    len(mismatched),
                    mismatched[0],
                )
        try:
            return cls(ranks, specials, name=TOKENIZER_FILE.split(".")[0])
        except ValueError as e:
            raise UserError(f"{directory}: bad tokenizer: {e}") from None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`; special tokens written in it become their ids (never an error)."""
        ids: list[int] = []
        for start in range(0, len(text), _ENCODE_CHUNK):
            ids.extend(self._encode_chunk(text[start : start + _ENCODE_CHUNK]))
        return ids

    def _encode_chunk(self, text: str) -> list[int]:
        # tiktoken's `allowed_special="all"` hands the whole 4111-token set to Rust on every call
        # (~0.5 ms). When every special token looks like `<|...|>`, no two can overlap, so splitting at
        # them here and BPE-encoding the text between gives the same ids about 100x faster.
        if not self._simple_specials:
            return self._encoding.encode(text, allowed_special="all")
        ids: list[int] = []
        last = 0
        for match in _SPECIAL_CANDIDATE.finditer(text):
            special = self.special_tokens.get(match.group(0))
            if special is None:
                continue
            if match.start() > last:
                ids.extend(self._encoding.encode_ordinary(text[last : match.start()]))
            ids.append(special)
            last = match.end()
        if last < len(text):
            ids.extend(self._encoding.encode_ordinary(text[last:]))
        return ids

    def decode(self, ids: list[int]) -> str:
        """Text of token ids (invalid UTF-8 replaced)."""
        return self._encoding.decode(list(ids))

    def token_id(self, token: str) -> int:
        """Id of a special token."""
        return self.special_tokens[token]

    def ranks(self) -> dict[bytes, int]:
        """The BPE ranks (token bytes -> rank)."""
        return {self._encoding.decode_single_token_bytes(i): i for i in range(self.num_ranks)}

    def save(self, directory: str | os.PathLike) -> None:
        """Write `tokenizer.tiktoken` and `special_tokens.json` (token -> id, indent 2) into `directory`."""
        directory = Path(directory)
        write_ranks(directory / TOKENIZER_FILE, self.ranks())
        atomic_write_text(
            directory / SPECIAL_TOKENS_FILE, json.dumps(self.special_tokens, indent=2, ensure_ascii=False)
        )
