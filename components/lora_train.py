"""lora-train: LoRA checkpoints (Model), losses and tokens/s (Metrics), loss curves (HTML).

Resume folder, object-store checkpoint sync and the loss page: fish_speech/steps/train.py.
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def lora_train(
    protos: Input[Dataset],
    base_model: Input[Model],
    content_hash: str,
    lora_config: str,
    max_steps: int,
    batch_size: int,
    accumulate_grad_batches: int,
    learning_rate: float,
    val_fraction: float,
    save_every: int,
    checkpoint_root: str,
    gpu_type: str,
    gpu_count: int,
    lora: Output[Model],
    metrics: Output[Metrics],
    loss_plot: Output[HTML],
):
    """`fish-speech train ... --resume` (fish_speech/steps/train.py). Each parameter named like a
    `TrainOptions` field is that setting; the accelerator settings are the task's resource request."""
    from fish_speech.options import pick_fields
    from fish_speech.steps.common import log_metrics
    from fish_speech.steps.train import lora_train_step
    from fish_speech.text2semantic.options import TrainOptions

    settings = pick_fields(TrainOptions, locals())
    result = lora_train_step(
        protos.path,
        base_model.path,
        lora.path,
        checkpoint_root=checkpoint_root,
        inputs={"protos": protos.uri, "base_model": base_model.uri, "content_hash": content_hash},
        loss_html=loss_plot.path,
        **settings,
    )
    log_metrics(metrics, result["metrics"])
    lora.metadata.update({k: result[k] for k in ("checkpoints", "checkpoint_folder")})
    lora.metadata.update({"lora_config": lora_config, "accelerator": f"{gpu_count} x {gpu_type}"})
