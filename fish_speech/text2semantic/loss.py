"""Training loss of the DualAR model (upstream `TextToSemantic._step`, `lit_module.py`): token cross-entropy + codebook cross-entropy.

`loss = base_loss + semantic_loss`, unweighted, as upstream. `base_loss` is the cross-entropy of the
slow transformer's token logits against row 0 of the labels; `semantic_loss` that of the fast
transformer's codebook logits against the codes of every frame the slow transformer predicts (the
positions whose row-0 label is a semantic token, row-major over (batch, time), the same selection the
model's training forward makes). Everything stays on the device: no host synchronisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


@dataclass
class LossOutput:
    """Scalar tensors; `top5_hits` / `top5_count` let callers aggregate accuracy over many batches."""

    loss: torch.Tensor
    base_loss: torch.Tensor
    semantic_loss: torch.Tensor
    top5_hits: torch.Tensor
    top5_count: torch.Tensor

    @property
    def top5_accuracy(self) -> torch.Tensor:
        return self.top5_hits.float() / self.top5_count.clamp(min=1).float()


def semantic_positions(labels: torch.Tensor, semantic_begin_id: int, semantic_end_id: int) -> torch.Tensor:
    """(B, T) bool: positions whose row-0 label is a semantic token (the frames being predicted)."""
    row0 = labels[:, 0]
    return (row0 >= semantic_begin_id) & (row0 <= semantic_end_id)


def _mean_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, count: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over non-ignored targets / `count` (default: their number); 0 (not NaN) when there are none."""
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    if count is None:
        count = (labels != IGNORE_INDEX).sum()
    return total / count.clamp(min=1)


def target_counts(
    labels: torch.Tensor, semantic_begin_id: int, semantic_end_id: int, num_codebooks: int
) -> torch.Tensor:
    """(2,) int64 on the labels' device: the number of token targets and of codebook targets of a batch.

    Summed over ranks, these are the denominators that make a distributed loss the mean over the
    whole global batch (`dual_ar_loss(..., counts=...)`).
    """
    sel = semantic_positions(labels, semantic_begin_id, semantic_end_id)
    codes = labels[:, 1 : 1 + num_codebooks].transpose(1, 2)[sel]
    return torch.stack([(labels[:, 0] != IGNORE_INDEX).sum(), (codes != IGNORE_INDEX).sum()])


def dual_ar_loss(
    token_logits: torch.Tensor,
    codebook_logits: torch.Tensor,
    labels: torch.Tensor,
    semantic_begin_id: int,
    semantic_end_id: int,
    counts: torch.Tensor | None = None,
) -> LossOutput:
    """Loss of one batch.

    token_logits (B, T, V); codebook_logits (N, C, K) for the N selected positions; labels
    (B, C+1, T) with -100 = ignore. `counts`: the (token, codebook) target counts to divide the sums
    by (`target_counts` summed over ranks); default: this batch's own, i.e. the batch mean.
    """
    vocab = token_logits.shape[-1]
    base_count, code_count = (None, None) if counts is None else (counts[0], counts[1])
    base_loss = _mean_cross_entropy(token_logits.reshape(-1, vocab), labels[:, 0].reshape(-1), base_count)

    num_codebooks = codebook_logits.shape[1]
    sel = semantic_positions(labels, semantic_begin_id, semantic_end_id)
    # (B, C, T) -> (B, T, C), then the selected (b, t) rows in row-major order: (N, C)
    codebook_labels = labels[:, 1 : 1 + num_codebooks].transpose(1, 2)[sel]
    if codebook_labels.shape[0] != codebook_logits.shape[0]:
        raise ValueError(
            f"codebook logits have {codebook_logits.shape[0]} rows but the labels select "
            f"{codebook_labels.shape[0]} semantic positions"
        )
    flat_logits = codebook_logits.reshape(-1, codebook_logits.shape[-1])
    flat_labels = codebook_labels.reshape(-1)
    semantic_loss = _mean_cross_entropy(flat_logits, flat_labels, code_count)

    # top-5 accuracy over codebook targets; code 0 (also the pad value) never counts (upstream)
    counted = (flat_labels != IGNORE_INDEX) & (flat_labels != 0)
    top5 = flat_logits.topk(min(5, flat_logits.shape[-1]), dim=-1).indices
    hit = (top5 == flat_labels.unsqueeze(-1)).any(dim=-1) & counted
    return LossOutput(
        loss=base_loss + semantic_loss,
        base_loss=base_loss,
        semantic_loss=semantic_loss,
        top5_hits=hit.sum(),
        top5_count=counted.sum(),
    )
