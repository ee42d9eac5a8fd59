"""The model steps: fetch-weights, merge-lora, publish."""

from __future__ import annotations

from pathlib import Path

from fish_speech.steps.common import StepError, run_command


def fetch_weights_step(source: str, revision: str, output: str) -> None:
    """`fish-speech fetch-weights SOURCE --output OUTPUT [--revision REV]` (tiny, hf://, gs://, s3://, dir)."""
    argv = ["fetch-weights", source, "--output", output]
    if revision:
        if not source.startswith("hf://"):
            raise StepError(f"base_revision={revision!r} applies to hf:// sources only, not {source!r}")
        argv += ["--revision", revision]
    run_command(argv)


def merge_lora_step(base_model: str, lora: str, lora_config: str, checkpoint: str, output: str) -> None:
    """`fish-speech merge-lora` of one checkpoint of the training output folder `lora`.

    `checkpoint`: a selector (best, last, earliest, step_N: merge-lora resolves it) or a file name
    under the folder's checkpoints/.
    """
    from fish_speech.text2semantic.training.checkpoints import CHECKPOINT_DIR

    named = Path(lora) / CHECKPOINT_DIR / checkpoint
    weight = str(named) if named.is_file() else checkpoint
    argv = ["merge-lora", "--lora-config", lora_config, "--base-weight", base_model]
    run_command([*argv, "--lora-weight", weight, "--train-output", lora, "--output", output])


def publish_step(model: str, destination: str) -> str:
    """`fish-speech publish MODEL DESTINATION`; the destination."""
    run_command(["publish", model, destination])
    return destination
