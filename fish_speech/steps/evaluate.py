"""The evaluate step: `fish-speech evaluate`, then the checkpoint merge-lora merges and the publish gate.

`checkpoint=auto` merges evaluate's choice; a selector (best, last, earliest) or a step name merges that
checkpoint (added to the scored candidates). `publish_policy` `always` | `if_better` decides whether the
merged model is published (`fish_speech.evaluate.run.publish_decision`), with a one-line reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fish_speech.steps.common import StepError, run_command

AUTO = "auto"
PUBLISH_POLICIES = ("always", "if_better")


def _wanted_checkpoints(checkpoints: str, checkpoint: str) -> str:
    if checkpoint == AUTO or checkpoints.strip() == "all":
        return checkpoints
    name = checkpoint.removesuffix(".ckpt")
    items = [s.strip() for s in checkpoints.split(",") if s.strip()]
    return ",".join(items if name in items else [*items, name])


def evaluate_step(
    base_model: str,
    lora: str,
    data: str,
    codes: Sequence[str],
    output: str,
    *,
    checkpoint: str = AUTO,
    checkpoints: str = "earliest,best,last",
    sentences: int = 8,
    asr_model: str = "",
    speaker_model: str = "",
    publish_policy: str = "if_better",
    model_cache: str = "",
    extra_args: Sequence[str] = (),
) -> dict[str, Any]:
    """`fish-speech evaluate --base-weight BASE --train-output LORA --data DATA --codes SHARD... --output OUT`;
    returns the step's outputs: `checkpoint` (for merge-lora), `publish` (`"true"`/`"false"`),
    `publish_reason`, `metrics` (numbers for the Metrics artifact) and `report` (the HTML page)."""
    from fish_speech.evaluate.run import publish_decision
    from fish_speech.text2semantic.training.checkpoints import CHECKPOINT_DIR, checkpoint_step

    if publish_policy not in PUBLISH_POLICIES:
        raise StepError(f"publish_policy {publish_policy!r}: use {' or '.join(PUBLISH_POLICIES)}")
    out = Path(output)
    argv = ["evaluate", "--base-weight", base_model, "--train-output", lora, "--data", data]
    for shard in codes:
        argv += ["--codes", shard]
    argv += ["--output", out, "--checkpoints", _wanted_checkpoints(checkpoints, checkpoint)]
    argv += ["--sentences", int(sentences)]
    if asr_model:
        argv += ["--asr", asr_model]
    if speaker_model:
        argv += ["--speaker-model", speaker_model]
    if model_cache:
        argv += ["--model-cache", model_cache]
    run_command([*argv, *extra_args])
    result = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    choice = result["choice"]
    if checkpoint == AUTO:
        merged = choice["chosen"]
    else:
        # a selector (best/last/earliest) or a step name: the name of the checkpoint it resolves to
        from fish_speech.text2semantic.training.checkpoints import select_checkpoint

        named = Path(lora) / CHECKPOINT_DIR / checkpoint
        path = named if named.is_file() else select_checkpoint(checkpoint.removesuffix(".ckpt"), lora)
        merged = f"step_{checkpoint_step(path):09d}"
    publish, reason = publish_decision(result, publish_policy, merged)
    print(f"evaluate: merging {merged}; {reason}")
    rows = {c["name"]: c for c in result["candidates"]}
    metrics: dict[str, float] = {"beats_base": int(bool(choice["beats_base"])), "publish": int(publish)}
    for prefix, name in (("chosen", merged), ("base", "base"), ("real", "real")):
        for key in ("similarity", "cer", "wer", "duration_ratio"):
            value = rows.get(name, {}).get(key)
            if value is not None:
                metrics[f"{prefix}_{key}"] = float(value)
    metrics["chosen_step"] = int(rows.get(merged, {}).get("step") or 0)
    metrics["evaluate_seconds"] = float(result.get("timing", {}).get("total_s", 0.0))
    return {
        "checkpoint": merged,
        "publish": "true" if publish else "false",
        "publish_reason": reason,
        "metrics": metrics,
        "report": str(out / "report.html"),
    }
