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
    gpu_type: str,
    gpu_count: int,
    merged: Output[Model],
):
    """`fish-speech merge-lora --lora-config C --base-weight BASE --lora-weight CKPT --output MERGED`.

    `checkpoint`: best, last, earliest or step_N (selected in the training output that `lora` holds),
    or a file name under its checkpoints/ folder.
    """
    from pathlib import Path

    from fish_speech.cli import main

    argv = ["merge-lora", "--lora-config", lora_config, "--base-weight", base_model.path]
    if checkpoint in ("best", "last", "earliest") or (
        checkpoint.startswith("step_") and not checkpoint.endswith(".ckpt")
    ):
        argv += ["--lora-weight", checkpoint, "--train-output", lora.path]
    else:
        argv += ["--lora-weight", str(Path(lora.path) / "checkpoints" / checkpoint)]
    argv += ["--output", merged.path]
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    merged.metadata.update({"lora_config": lora_config, "checkpoint": checkpoint})
    merged.metadata["base_source"] = base_model.metadata.get("source", base_model.uri)
