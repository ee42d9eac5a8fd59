"""Training samples for the text-to-semantic model (upstream: `fish_speech/datasets/semantic.py` and `fish_speech/content_sequence.py`).

A protos group (one speaker's clips) becomes samples of consecutive sentences; each sentence is the
fixed prompt template with its transcript followed by its semantic tokens, shifted by one for
next-token prediction. `collate` pads/cuts samples into a batch.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from fish_speech.errors import UserError
from fish_speech.text2semantic.tokenizer import IM_END, FishTokenizer

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
SYSTEM_PROMPT = "Speak out the provided text."
USER_PREFIX = "<|speaker:user|> "
SKIP_TEXT = "<|skip_text|>"
ASSISTANT_HEADER = "<|speaker:assistant|> <|voice|>"
TOKENS_PER_SENTENCE = 20  # upstream's estimate: a window holds at most max_length // 20 sentences

_EMOJI = re.compile("[\U0001f600-\U0001f64f\U0001f300-\U0001f5ff\U0001f680-\U0001f6ff\U0001f1e0-\U0001f1ff]")
_COMMAS = re.compile(r",{2,}")


def clean_text(text: str) -> str:
    """Sample-time cleaning (upstream `fish_speech/text/clean.py` `clean_text`): strip, straighten curly single quotes, drop emoji, collapse comma runs."""
    text = text.strip().replace("\u2018", "'").replace("\u2019", "'")
    return _COMMAS.sub(",", _EMOJI.sub("", text))


def sentence_codes(sentence) -> np.ndarray:
    """Codes `(C, frames)` int64 of a protos `Sentence` (one row per `Semantics`)."""
    rows = [np.asarray(s.values, dtype=np.int64) for s in sentence.semantics]
    if not rows:
        return np.zeros((0, 0), dtype=np.int64)
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"codebook rows differ in length: {[len(r) for r in rows]}")
    return np.stack(rows)


def sentence_tensors(
    tokenizer: FishTokenizer, text: str, codes: np.ndarray | torch.Tensor, skip_text: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sentence `(tokens, labels)`, both `(C+1, L-1)` int64 (upstream's `ContentSequence` training template); `text` is used as given.

    Template parts, tokenized separately: system prompt, `<|speaker:user|> ` + text, `<|im_end|>`,
    assistant header with `<|voice|>` (no loss), then one semantic token per frame and `<|im_end|>`
    (loss). Rows 1..C hold the frame's codes where the input token is semantic (tokens) or where the
    predicted token is (labels); the last label column of rows 1..C is 0, as upstream.
    """
    codes = torch.as_tensor(np.asarray(codes), dtype=torch.long)
    if codes.dim() != 2 or codes.size(0) == 0:
        raise ValueError(f"codes must be (num_codebooks, frames), got shape {tuple(codes.shape)}")
    num_codebooks, frames = codes.shape
    if frames and (codes[0].min() < 0 or codes[0].max() >= tokenizer.num_semantic_tokens):
        raise ValueError(f"semantic codes must lie in [0, {tokenizer.num_semantic_tokens})")
    im_end = tokenizer.token_id(IM_END)
    prompt = (
        tokenizer.encode(SYSTEM_PROMPT)
        + tokenizer.encode(USER_PREFIX + (SKIP_TEXT if skip_text else text))
        + [im_end]
        + tokenizer.encode(ASSISTANT_HEADER)
    )
    start = len(prompt)  # index of the first semantic token in the unshifted sequence
    seq = torch.tensor(prompt + [0] * frames + [im_end], dtype=torch.long)
    seq[start : start + frames] = codes[0] + tokenizer.semantic_begin_id
    length = seq.numel() - 1

    tokens = torch.zeros(num_codebooks + 1, length, dtype=torch.long)
    tokens[0] = seq[:-1]
    tokens[1:, start : start + frames] = codes
    labels = torch.full((num_codebooks + 1, length), IGNORE_INDEX, dtype=torch.long)
    labels[0, start - 1 :] = seq[start:]  # loss on the semantic tokens and the closing <|im_end|>
    labels[1:, start - 1 : start - 1 + frames] = codes
    labels[1:, -1] = 0
    return tokens, labels


def collate(
    samples: Sequence[dict[str, torch.Tensor]], pad_id: int, max_length: int
) -> dict[str, torch.Tensor]:
    """Batch samples (upstream `TextDataCollator`): cut to `min(longest, max_length)`, right-pad (row 0 with `pad_id`, codes 0, labels -100).

    Returns `inputs` `(B, C+1, T)`, `attention_masks` `(B, T)` bool True at padding, `labels` `(B, C+1, T)`.
    """
    if not samples or any(s is None for s in samples):
        raise ValueError("collate needs a non-empty list of samples")
    rows = {s["tokens"].size(0) for s in samples}
    if len(rows) != 1:
        raise ValueError(f"samples have different numbers of codebooks: {sorted(r - 1 for r in rows)}")
    width = min(max(s["tokens"].size(1) for s in samples), max_length)
    batch = len(samples)
    inputs = torch.zeros(batch, rows.pop(), width, dtype=torch.long)
    inputs[:, 0] = pad_id
    labels = torch.full_like(inputs, IGNORE_INDEX)
    masks = torch.ones(batch, width, dtype=torch.bool)
    for i, s in enumerate(samples):
        n = min(s["tokens"].size(1), width)
        inputs[i, :, :n] = s["tokens"][:, :n]
        labels[i, :, :n] = s["labels"][:, :n]
        masks[i, :n] = False
    return {"inputs": inputs, "attention_masks": masks, "labels": labels}


@dataclass(frozen=True)
class Clip:
    """One sentence of a group: its transcript(s) and codes `(C, frames)`."""

    texts: tuple[str, ...]
    codes: np.ndarray


@dataclass(frozen=True)
class Group:
    """One protos group (a speaker's clips), in plain picklable form."""

    name: str
    sentences: list[Clip]
    source: str


def sample_length(tokenizer, text: str, frames: int) -> int:
    """Model input length of a sentence with transcript `text` and `frames` code frames in the training
    template: system prompt, user turn, assistant header, the frames (inputs: the sequence shifted by one)."""
    fixed = len(tokenizer.encode(SYSTEM_PROMPT)) + 1 + len(tokenizer.encode(ASSISTANT_HEADER))
    return fixed + len(tokenizer.encode(USER_PREFIX + clean_text(text))) + frames


class SampleStream(IterableDataset):
    """Endless stream of training samples drawn from protos groups (upstream `semantic.py`: loading, then `augment`).

    Groups are shuffled once with `random.Random(seed)`; each sample picks a group with probability
    proportional to its sentence count, then (causal) a contiguous window of at most
    `max_length // 20` sentences, or (non-causal) that many drawn with replacement; every sentence
    uses one of its texts at random, cleaned. Each data-loader worker (and distributed rank) draws
    from its own RNG seeded from `seed`, so workers yield different samples.

    `groups` are `TextData` messages; they are checked and converted once (plain Python + numpy, so
    the stream pickles into any worker). A sentence without text, semantic codes outside the
    tokenizer's range, or (with `too_long="error"`, the default) one longer than `max_length` tokens
    raise UserError naming `sources[i]` (the file of group i) and the clip. `too_long="truncate"`
    only logs it and lets the collator cut the sample, as upstream does silently.
    """

    def __init__(
        self,
        groups: Sequence,
        tokenizer: FishTokenizer,
        max_length: int,
        seed: int = 42,
        causal: bool = True,
        skip_text_prob: float = 0.0,
        sources: Sequence[str] | None = None,
        too_long: str = "error",
    ) -> None:
        super().__init__()
        if too_long not in ("error", "truncate"):
            raise ValueError(f"too_long must be 'error' or 'truncate', got {too_long!r}")
        if not 0.0 <= skip_text_prob <= 1.0:
            raise ValueError(f"skip_text_prob must be in [0, 1], got {skip_text_prob}")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.seed = seed
        self.causal = causal
        self.skip_text_prob = skip_text_prob
        self.too_long = too_long
        sources = list(sources) if sources is not None else ["<protos>"] * len(groups)
        if len(sources) != len(groups):
            raise ValueError("sources must name one file per group")
        converted = [self._convert(g, src) for g, src in zip(groups, sources, strict=True)]
        counts = {clip.codes.shape[0] for g in converted for clip in g.sentences}
        if not counts:
            raise UserError(f"{', '.join(sorted(set(sources))) or 'protos'}: no sentences to train on")
        if len(counts) > 1:
            first = next(g for g in converted if g.sentences)
            odd = next(
                g
                for g in converted
                for c in g.sentences
                if c.codes.shape[0] != first.sentences[0].codes.shape[0]
            )
            raise UserError(
                f"{odd.source}: group {odd.name!r} has clips with a different number of codebooks than "
                f"group {first.name!r} of {first.source} ({sorted(counts)})"
            )
        self.num_codebooks = counts.pop()
        random.Random(seed).shuffle(converted)  # as upstream: a fresh Random(seed) over the group list
        self.groups = converted
        self.weights = [len(g.sentences) for g in self.groups]

    @property
    def sources(self) -> list[str]:
        """The file each group (in stream order) came from."""
        return [g.source for g in self.groups]

    @classmethod
    def from_files(
        cls,
        paths: str | os.PathLike | Iterable[str | os.PathLike],
        tokenizer: FishTokenizer,
        max_length: int,
        seed: int = 42,
        **kw,
    ) -> SampleStream:
        """Read every group of the `.protos` files (or folders) `paths` and build the stream.

        As upstream, the sorted file list is shuffled with `random.Random(seed)` before reading, so
        the group order (and with it every draw) matches upstream's single-process dataset.
        """
        from fish_speech.dataset.protos import list_proto_files, read_protos_file

        files = list_proto_files(paths)
        if not files:
            raise UserError(f"{paths}: no .protos files found")
        random.Random(seed).shuffle(files)
        groups, sources = [], []
        for path in files:
            for group in read_protos_file(path):
                groups.append(group)
                sources.append(str(path))
        return cls(groups, tokenizer, max_length, seed=seed, sources=sources, **kw)

    def _convert(self, group, source: str) -> Group:
        """Check every sentence of a `TextData` group and convert it to a `Group`."""
        tok = self.tokenizer
        clips = []
        for index, sentence in enumerate(group.sentences):
            where = f"{source}: group {group.name!r}, sentence {index}"
            if not sentence.texts:
                raise UserError(f"{where}: no transcript")
            try:
                codes = sentence_codes(sentence)
            except ValueError as e:
                raise UserError(f"{where}: {e}") from None
            if codes.shape[0] == 0:
                raise UserError(f"{where}: no semantic codes")
            if codes.shape[1] and codes[0].max() >= tok.num_semantic_tokens:
                raise UserError(
                    f"{where}: semantic code {codes[0].max()} has no token (< {tok.num_semantic_tokens})"
                )
            for text in sentence.texts:
                length = sample_length(tok, text, codes.shape[1])
                if length > self.max_length:
                    message = f"{where}: {length} tokens ({codes.shape[1]} frames) exceed max_length {self.max_length}"
                    if self.too_long == "error":
                        raise UserError(f"{message}; split the clip or raise max_length")
                    log.warning("%s; the collator will cut it (upstream behaviour)", message)
            clips.append(Clip(tuple(sentence.texts), codes))
        return Group(group.name, clips, source)

    def sample(self, rng: random.Random) -> dict[str, torch.Tensor]:
        """Draw one sample with `rng` (call order as upstream's: group, window, then text + skip per sentence)."""
        group = rng.choices(self.groups, weights=self.weights, k=1)[0]
        sentences = list(group.sentences)
        n = max(1, self.max_length // TOKENS_PER_SENTENCE)
        if self.causal:
            if len(sentences) > n:
                start = rng.randint(0, len(sentences) - n)
                sentences = sentences[start : start + n]
        else:
            sentences = rng.choices(sentences, k=min(n, len(sentences)))
        tokens, labels = [], []
        for sentence in sentences:
            text = clean_text(rng.choice(sentence.texts))
            skip = rng.random() < self.skip_text_prob
            t, lab = sentence_tensors(self.tokenizer, text, sentence.codes, skip_text=skip)
            tokens.append(t)
            labels.append(lab)
        return {"tokens": torch.cat(tokens, dim=1), "labels": torch.cat(labels, dim=1)}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = get_worker_info()
        worker_id = worker.id if worker is not None else 0
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        rng = random.Random(f"{self.seed}-{rank}-{worker_id}")
        while True:
            yield self.sample(rng)
