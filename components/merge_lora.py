"""merge-lora: the base weights with the chosen LoRA checkpoint merged in, as a full checkpoint Model."""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def merge_lora(
    base_model: Input[Model],
    lora: Input[Model],
    lora_config: str,
    checkpoint: str,
    accelerator_type: str,
    accelerator_count: int,
    merged: Output[Model],
):
    """`fish-speech merge-lora --lora-config C --base-weight BASE --lora-weight CKPT --output MERGED`.

    `checkpoint`: best, last, earliest, step_N, or a file name under the LoRA model's checkpoints/.
    """
    from pathlib import Path

    from fish_speech.cli import main

    folder = Path(lora.path) / "checkpoints"
    if checkpoint in ("best", "last", "earliest") or checkpoint.startswith("step_"):
        weight = str(folder / checkpoint) if checkpoint.endswith(".ckpt") else f"{folder}/{checkpoint}"
    else:
        weight = str(folder / checkpoint)
    argv = ["merge-lora", "--lora-config", lora_config, "--base-weight", base_model.path]
    argv += ["--lora-weight", weight, "--output", merged.path]
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    merged.metadata.update({"lora_config": lora_config, "checkpoint": checkpoint})
    merged.metadata["base_source"] = base_model.metadata.get("source", base_model.uri)
