"""Training data: protos groups -> checked sentences -> per-speaker validation split -> batches.

Batches are a pure function of (seed, batch index): sample `j` of global batch `b` is drawn by a
sample stream seeded from (seed, b, j), and rank `r` of `world` builds samples `r·B … (r+1)·B − 1` of
it. A resumed run therefore starts at batch `global_step × accumulation` and sees exactly the batches
an uninterrupted run would have seen, with any number of loader workers; and `world` ranks at batch
B see the same samples as one process at batch `world·B`.
"""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import IterableDataset, get_worker_info

from fish_speech.dataset.protos import TextData, list_proto_files, read_protos
from fish_speech.errors import UserError
from fish_speech.text2semantic import samples
from fish_speech.text2semantic.training.signals import ignore_stop_signals_in_worker

log = logging.getLogger(__name__)


@dataclass
class SkippedSentence:
    """A sentence left out of training, and why (reported in summary.json)."""

    group: str
    index: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"group": self.group, "sentence": self.index, "reason": self.reason}


@dataclass
class DataSplit:
    train: list[TextData]
    val: list[TextData]
    skipped: list[SkippedSentence] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "train_groups": len(self.train),
            "train_sentences": sum(len(g.sentences) for g in self.train),
            "val_groups": len(self.val),
            "val_sentences": sum(len(g.sentences) for g in self.val),
            "skipped_sentences": [s.to_dict() for s in self.skipped],
        }


def load_groups(data: str | os.PathLike | Iterable[str | os.PathLike]) -> list[TextData]:
    """Every `TextData` group of the protos files/folders `data`; UserError when there is nothing to train on."""
    files = list_proto_files(data)
    shown = ", ".join(str(p) for p in ([data] if isinstance(data, (str, os.PathLike)) else data))
    if not files:
        raise UserError(f"{shown}: no .protos files found")
    groups = list(read_protos(files))
    if not any(len(g.sentences) for g in groups):
        raise UserError(f"{shown}: the protos hold no sentences ({len(groups)} groups, all empty)")
    return groups


def sentence_length(tokenizer, sentence) -> int:
    """Model input length of one sentence in the training template (longest of its texts)."""
    frames = len(sentence.semantics[0].values) if sentence.semantics else 0
    return max(samples.sample_length(tokenizer, t, frames) for t in sentence.texts or [""])


def check_sentences(
    groups: list[TextData], tokenizer, max_length: int, num_codebooks: int, codebook_size: int
) -> tuple[list[TextData], list[SkippedSentence]]:
    """Drop (and report) sentences that cannot be trained on: no text, wrong codes, longer than `max_length`."""
    kept_groups, skipped = [], []
    for gi, group in enumerate(groups):
        name = group.name or f"group{gi}"
        kept = []
        for si, s in enumerate(group.sentences):
            reason = _sentence_problem(s, tokenizer, max_length, num_codebooks, codebook_size)
            if reason:
                skipped.append(SkippedSentence(name, si, reason))
            else:
                kept.append(s)
        if kept:
            kept_groups.append(TextData(source=group.source, name=group.name, sentences=kept))
    for s in skipped:
        log.warning("skipping sentence %d of group %r: %s", s.index, s.group, s.reason)
    return kept_groups, skipped


def _sentence_problem(s, tokenizer, max_length: int, num_codebooks: int, codebook_size: int) -> str | None:
    if not s.texts:
        return "no transcript"
    if len(s.semantics) != num_codebooks:
        return f"{len(s.semantics)} codebook rows, the model has {num_codebooks}"
    frames = {len(row.values) for row in s.semantics}
    if len(frames) != 1 or 0 in frames:
        return f"codebook rows of unequal or zero length ({sorted(frames)})"
    high = max(max(row.values) for row in s.semantics)
    if high >= codebook_size:
        return f"code {high} outside the codebook (size {codebook_size})"
    length = sentence_length(tokenizer, s)
    if length > max_length:
        return f"{length} tokens, longer than the maximum length {max_length}"
    return None


def split_validation(groups: list[TextData], val_fraction: float) -> tuple[list[TextData], list[TextData]]:
    """Hold out the last `round(n × val_fraction)` sentences (at least 1) of every speaker group with n ≥ 3.

    The tail is held out (not a random subset) so both parts stay contiguous runs of recordings, which
    is what the causal sample windows expect. At least 2 sentences always stay in training.
    """
    if not 0 <= val_fraction < 1:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for g in groups:
        n = len(g.sentences)
        k = min(n - 2, max(1, round(n * val_fraction))) if val_fraction > 0 and n >= 3 else 0
        train.append(TextData(source=g.source, name=g.name, sentences=list(g.sentences)[: n - k]))
        if k:
            val.append(TextData(source=g.source, name=g.name, sentences=list(g.sentences)[n - k :]))
    return train, val


def prepare_data(
    data, tokenizer, max_length: int, num_codebooks: int, codebook_size: int, val_fraction: float
) -> DataSplit:
    groups = load_groups(data)
    groups, skipped = check_sentences(groups, tokenizer, max_length, num_codebooks, codebook_size)
    if not groups:
        first = skipped[0] if skipped else None
        example = f"; e.g. group {first.group!r} sentence {first.index}: {first.reason}" if first else ""
        raise UserError(
            f"{', '.join(map(str, data))}: no usable sentence in the protos ({len(skipped)} skipped{example})"
        )
    train, val = split_validation(groups, val_fraction)
    if val_fraction > 0 and not val:
        log.warning("no speaker has 3 or more sentences: training without a validation split")
    return DataSplit(train, val, skipped)


# ---- batches ----


def sample_seed(seed: int, index: int, position: int) -> int:
    """Seed of sample `position` of global batch `index`: independent of what was drawn before."""
    return random.Random(f"{seed}/{index}/{position}").getrandbits(63)


class BatchBuilder:
    """Builds collated batches from groups with the project's sample stream and collator."""

    def __init__(self, groups: list[TextData], tokenizer, max_length: int, batch_size: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.pad_id = tokenizer.end_of_text_id
        # sentences were checked by `check_sentences`; longer windows are cut by the collator
        self.stream = samples.SampleStream(groups, tokenizer, max_length, too_long="truncate")

    def collate(self, items: list[dict[str, torch.Tensor]]) -> dict[str, Any]:
        lengths = [int(s["tokens"].shape[-1]) for s in items]
        batch: dict[str, Any] = dict(samples.collate(items, self.pad_id, self.max_length))
        # host-side counts, so that logging them never waits for the device
        batch["num_tokens"] = int(sum(min(n, self.max_length) for n in lengths))
        batch["num_truncated"] = int(sum(n > self.max_length for n in lengths))
        return batch

    def batch(self, seed: int, index: int, rank: int = 0, world_size: int = 1) -> dict[str, Any]:
        """This rank's share (`batch_size` samples) of global batch `index` (`world_size × batch_size`)."""
        first = rank * self.batch_size
        return self.collate(
            [
                self.stream.sample(random.Random(sample_seed(seed, index, j)))
                for j in range(first, first + self.batch_size)
            ]
        )

    def validation_batches(self, val_groups: list[TextData], max_batches: int) -> list[dict[str, Any]]:
        """Fixed validation batches: one window of held-out sentences per speaker, in group order."""
        items = []
        for i, group in enumerate(val_groups):
            stream = samples.SampleStream([group], self.tokenizer, self.max_length, too_long="truncate")
            items.append(stream.sample(random.Random(sample_seed(0, i, 0))))
        if len(items) > max_batches * self.batch_size:
            log.info("validation uses %d of %d held-out windows", max_batches * self.batch_size, len(items))
            items = items[: max_batches * self.batch_size]
        return [self.collate(items[i : i + self.batch_size]) for i in range(0, len(items), self.batch_size)]


class TrainBatches(IterableDataset):
    """Endless batches `start, start+1, ...`: this rank's share of global batch `b`, a function of (seed, b).

    Loader workers take every `num_workers`-th batch, which the DataLoader hands out round-robin, so
    the order is the same for any worker count. Use with `DataLoader(batch_size=None)`.
    """

    def __init__(self, builder: BatchBuilder, seed: int, start: int = 0) -> None:
        self.builder = builder
        self.seed = seed
        self.start = start
        self.rank = 0
        self.world_size = 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index in itertools.count(self.start + worker, workers):
            yield self.builder.batch(self.seed, index, self.rank, self.world_size)


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def make_loader(dataset: TrainBatches, num_workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        # a SIGTERM/SIGINT sent to the process group must not kill workers before the checkpoint
        worker_init_fn=ignore_stop_signals_in_worker if num_workers > 0 else None,
        # a private generator: creating the loader iterator must not advance the global torch RNG,
        # or a resumed run would draw different dropout masks than an uninterrupted one
        generator=torch.Generator().manual_seed(0),
    )
