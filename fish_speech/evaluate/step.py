"""The `evaluate` pipeline step as a plain function (no KFP import): what components/evaluate.py calls.

It lays the clips and the extract-vq shards' codes out as one tree (audio linked, transcripts and codes
copied: the layout `fish-speech evaluate --data` reads), runs the command, and turns its eval.json into
the step's outputs: the checkpoint merge-lora merges (`checkpoint=auto`: evaluate's choice; a selector
or step name: that one, also scored), whether to publish under `publish_policy`, and the one-line why.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fish_speech.errors import UserError

log = logging.getLogger(__name__)

AUTO = "auto"
PUBLISH_POLICIES = ("always", "if_better")


def assemble_tree(data: str | os.PathLike, codes: Sequence[str | os.PathLike], out: Path) -> Path:
    """`out/<data name>/...`: every file of `data` linked (or copied), plus each code shard's `.npy` copied
    to its relative path; a clip with codes in two shards is an error."""
    source = Path(data)
    tree = out / source.name  # named like the data folder: groups are named after folders
    for path in source.rglob("*"):
        if path.is_file():
            dest = tree / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".lab":
                shutil.copyfile(path, dest)
            else:
                try:
                    os.link(path, dest)
                except OSError:
                    dest.symlink_to(path.resolve())
    owner: dict[Path, str] = {}
    for shard in codes:
        root = Path(shard)
        for npy in root.rglob("*.npy"):
            rel = npy.relative_to(root)
            if rel in owner:
                raise UserError(f"{rel}: codes in two extract-vq shards ({owner[rel]} and {root})")
            owner[rel] = str(root)
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(npy, tree / rel)
    return tree


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
    """Run `fish-speech evaluate` for a training output `lora`; return the step's outputs:
    `checkpoint` (for merge-lora), `publish` (`"true"`/`"false"`), `publish_reason`, `metrics`, `report`."""
    from fish_speech.cli import main
    from fish_speech.evaluate.run import publish_decision
    from fish_speech.text2semantic.training.checkpoints import CHECKPOINT_DIR, checkpoint_step

    if publish_policy not in PUBLISH_POLICIES:
        raise UserError(f"publish_policy {publish_policy!r}: use {' or '.join(PUBLISH_POLICIES)}")
    out = Path(output)
    with tempfile.TemporaryDirectory(prefix="evaluate-") as tmp:
        tree = assemble_tree(data, codes, Path(tmp)) if codes else Path(data)
        argv = ["evaluate", "--base-weight", base_model, "--train-output", lora, "--data", str(tree)]
        argv += ["--output", str(out), "--checkpoints", _wanted_checkpoints(checkpoints, checkpoint)]
        argv += ["--sentences", str(int(sentences))]
        if asr_model:
            argv += ["--asr", asr_model]
        if speaker_model:
            argv += ["--speaker-model", speaker_model]
        if model_cache:
            argv += ["--model-cache", model_cache]
        argv += list(extra_args)
        status = main(argv)
        if status != 0:
            raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
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
