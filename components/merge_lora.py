"""merge-lora: the base weights with the chosen LoRA checkpoint merged in, as a full checkpoint Model.

Runs on the CPU pool by default: merging needs memory (the base model in float32), not a GPU
(pipeline.py `MERGE_ON_GPU`).
"""

from kfp import dsl
from kfp.dsl import Input, Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def merge_lora(
    base_model: Input[Model],
    lora: Input[Model],
    lora_config: str,
    checkpoint: str,
    merged: Output[Model],
):
    """`fish-speech merge-lora --base-weight BASE --lora-weight CKPT --train-output LORA --output MERGED`.

    `checkpoint`: best, last, earliest or step_N (selected in the training output that `lora` holds),
    or a file name under its checkpoints/ folder.
    """
    from fish_speech.steps.model import merge_lora_step

    merge_lora_step(base_model.path, lora.path, lora_config, checkpoint, merged.path)
    merged.metadata.update({"lora_config": lora_config, "checkpoint": checkpoint})
    merged.metadata["base_source"] = base_model.metadata.get("source", base_model.uri)
