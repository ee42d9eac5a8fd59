"""lora-train: LoRA checkpoints (Model), losses and tokens/s (Metrics), loss curves (HTML).

Resume folder, object-store checkpoint sync, the TrainJob of `train_nodes` > 1 and the loss page:
fish_speech/steps/train.py.
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
    train_nodes: int,
    trainer_runtime: str,
    trainjob_image: str,
    trainjob_timeout_hours: float,
    gpu_node_selector: dict,
    gpu_tolerations: list,
    workspace_pvc: str,
    workspace_mount: str,
    lora: Output[Model],
    metrics: Output[Metrics],
    loss_plot: Output[HTML],
):
    """`fish-speech train ... --resume` (fish_speech/steps/train.py). Each parameter named like a
    `TrainOptions` field is that setting; the accelerator settings are the task's resource request, or
    with `train_nodes` > 1 those of each node of the TrainJob this task runs instead."""
    from fish_speech.options import pick_fields
    from fish_speech.steps.common import log_metrics
    from fish_speech.steps.train import TrainJobPlan, lora_train_step
    from fish_speech.text2semantic.options import TrainOptions

    settings = pick_fields(TrainOptions, locals())
    result = lora_train_step(
        protos.path,
        base_model.path,
        lora.path,
        checkpoint_root=checkpoint_root,
        inputs={"protos": protos.uri, "base_model": base_model.uri, "content_hash": content_hash},
        loss_html=loss_plot.path,
        trainjob=TrainJobPlan(
            num_nodes=train_nodes,
            gpus_per_node=gpu_count,
            gpu_resource=gpu_type,
            image=trainjob_image,
            runtime=trainer_runtime,
            timeout_hours=trainjob_timeout_hours,
            node_selector=gpu_node_selector,
            tolerations=gpu_tolerations,
            pvc=workspace_pvc,
            mount_path=workspace_mount,
        ),
        **settings,
    )
    log_metrics(metrics, result["metrics"])
    lora.metadata.update({k: result[k] for k in ("checkpoints", "checkpoint_folder")})
    lora.metadata.update(
        {"lora_config": lora_config, "accelerator": f"{train_nodes} node(s) x {gpu_count} x {gpu_type}"}
    )
