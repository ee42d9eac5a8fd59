"""Which checkpoint to merge, and whether it is worth publishing: a rule over the evaluation scores.

In upstream's spirit ("use the earliest checkpoint that meets your requirements"):

1. A checkpoint is *eligible* when every one of its utterances did not fail, its mean speaker similarity
   is within `similarity_margin` of the best checkpoint's, and its mean CER is at most the base model's
   plus `cer_margin` (absolute: 0.02 = two points of CER).
2. The choice is the eligible checkpoint with the lowest training step: later ones are not clearly
   better, and later steps drift further from the base model (upstream's warning about over-fitting).
3. When none is eligible (every checkpoint raised CER beyond the margin), the choice is the checkpoint
   with the lowest CER (then the earliest) and the `no_checkpoint_within_cer_margin` flag is set.
4. The chosen checkpoint *beats the base* when its similarity is higher than the base's and its CER is
   not worse than the base's by more than `cer_margin`. The pipeline publishes with
   `publish_policy=if_better` only then. A gain smaller than `similarity_margin` is flagged
   `gain_within_similarity_margin` (likely noise at this number of sentences).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fish_speech.errors import UserError

DEFAULT_SIMILARITY_MARGIN = 0.02
DEFAULT_CER_MARGIN = 0.02
BASE = "base"


@dataclass
class CandidateScore:
    """Aggregate scores of one candidate (`base` or a checkpoint name such as `step_000000100`)."""

    name: str
    step: int | None  # None for the base model
    similarity: float | None
    cer: float | None
    wer: float | None = None
    utterances: int = 0
    failures: int = 0


@dataclass
class Choice:
    """The chosen checkpoint and why; `to_dict` goes into eval.json."""

    chosen: str
    step: int
    reason: str
    beats_base: bool
    beats_base_reason: str
    eligible: list[str]
    similarity_margin: float
    cer_margin: float
    best_similarity: float | None
    base_similarity: float | None
    base_cer: float | None
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def compare_to_base(
    candidate: CandidateScore,
    base: CandidateScore | None,
    similarity_margin: float = DEFAULT_SIMILARITY_MARGIN,
    cer_margin: float = DEFAULT_CER_MARGIN,
) -> tuple[bool, str, list[str]]:
    """(beats the base?, one-line why, flags): rule 4 of the module docstring."""
    if base is None or base.similarity is None or candidate.similarity is None:
        return False, "no base scores to compare with", []
    if candidate.similarity <= base.similarity:
        return (
            False,
            f"similarity {_fmt(candidate.similarity)} is not above the base's {_fmt(base.similarity)}",
            [],
        )
    if base.cer is not None and (candidate.cer is None or candidate.cer > base.cer + cer_margin):
        return (
            False,
            f"CER {_fmt(candidate.cer)} is worse than the base's {_fmt(base.cer)} + {cer_margin}",
            [],
        )
    why = (
        f"similarity {_fmt(candidate.similarity)} > base {_fmt(base.similarity)}, "
        f"CER {_fmt(candidate.cer)} within {cer_margin} of base {_fmt(base.cer)}"
    )
    flags = (
        ["gain_within_similarity_margin"]
        if candidate.similarity - base.similarity < similarity_margin
        else []
    )
    return True, why, flags


def choose_checkpoint(
    scores: list[CandidateScore],
    similarity_margin: float = DEFAULT_SIMILARITY_MARGIN,
    cer_margin: float = DEFAULT_CER_MARGIN,
) -> Choice:
    """Apply the rule of the module docstring; UserError when there is no checkpoint to choose from."""
    if similarity_margin < 0 or cer_margin < 0:
        raise UserError(f"margins must be >= 0, got similarity {similarity_margin}, CER {cer_margin}")
    base = next((s for s in scores if s.step is None), None)
    checkpoints = sorted((s for s in scores if s.step is not None), key=lambda s: s.step)
    if not checkpoints:
        raise UserError("no checkpoint was evaluated: nothing to choose from")
    flags: list[str] = []
    working = [s for s in checkpoints if s.failures < s.utterances or s.utterances == 0]
    sims = [s.similarity for s in working if s.similarity is not None]
    best_sim = max(sims) if sims else None
    base_cer = base.cer if base else None
    base_sim = base.similarity if base else None
    if base is None:
        flags.append("no_base_scores")

    def eligible(s: CandidateScore) -> bool:
        if s.failures:
            return False
        if best_sim is not None and (s.similarity is None or s.similarity < best_sim - similarity_margin):
            return False
        return not (base_cer is not None and (s.cer is None or s.cer > base_cer + cer_margin))

    ok = [s for s in checkpoints if eligible(s)]
    if ok:
        chosen = ok[0]
        reason = (
            f"earliest checkpoint with similarity {_fmt(chosen.similarity)} within {similarity_margin} of the best "
            f"({_fmt(best_sim)}) and CER {_fmt(chosen.cer)} at most the base's {_fmt(base_cer)} + {cer_margin}"
        )
    else:
        flags.append("no_checkpoint_within_cer_margin")
        pool = working or checkpoints
        chosen = min(pool, key=lambda s: (s.cer if s.cer is not None else float("inf"), s.step))
        reason = (
            f"no checkpoint met the margins (similarity within {similarity_margin} of {_fmt(best_sim)}, "
            f"CER at most {_fmt(base_cer)} + {cer_margin}, no failed utterance); "
            f"took the lowest CER ({_fmt(chosen.cer)})"
        )
    if chosen.failures:
        flags.append("chosen_has_failed_utterances")

    beats, why, more = compare_to_base(chosen, base, similarity_margin, cer_margin)
    flags += more
    return Choice(
        chosen=chosen.name,
        step=chosen.step,
        reason=reason,
        beats_base=beats,
        beats_base_reason=why,
        eligible=[s.name for s in ok],
        similarity_margin=similarity_margin,
        cer_margin=cer_margin,
        best_similarity=best_sim,
        base_similarity=base_sim,
        base_cer=base_cer,
        flags=flags,
    )
