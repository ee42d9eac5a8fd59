"""evaluate: score the base model and the LoRA checkpoints on held-out sentences, choose one, gate publishing.

Outputs: the report page (HTML, audio players embedded), the chosen numbers (Metrics), the whole
evaluation folder (eval.json, eval.csv, audio/), and three strings: the checkpoint merge-lora merges,
whether to publish (`true`/`false`) and the one-line reason.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.images import CPU_IMAGE, GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def evaluate(
    base_model: Input[Model],
    lora: Input[Model],
    data: Input[Dataset],
    codes: Input[list[Dataset]],
    checkpoint: str,
    checkpoints: str,
    sentences: int,
    asr_model: str,
    speaker_model: str,
    publish_policy: str,
    model_cache: str,
    gpu_type: str,
    gpu_count: int,
    report: Output[HTML],
    metrics: Output[Metrics],
    results: Output[Artifact],
) -> NamedTuple("EvaluateOutputs", [("checkpoint", str), ("publish", str), ("publish_reason", str)]):
    """`fish-speech evaluate --base-weight BASE --train-output LORA --data DATA --codes SHARD... --output RESULTS`
    (fish_speech/steps/evaluate.py).

    The accelerator settings are the task's resource request (kept in the inputs, like lora-train's).
    """
    import shutil
    from collections import namedtuple

    from fish_speech.steps.common import log_metrics
    from fish_speech.steps.evaluate import evaluate_step

    out = evaluate_step(
        base_model.path,
        lora.path,
        data.path,
        [c.path for c in codes],
        results.path,
        checkpoint=checkpoint,
        checkpoints=checkpoints,
        sentences=sentences,
        asr_model=asr_model,
        speaker_model=speaker_model,
        publish_policy=publish_policy,
        model_cache=model_cache,
    )
    shutil.copyfile(out["report"], report.path)
    report.metadata["display_name"] = "checkpoint evaluation"
    log_metrics(metrics, out["metrics"])
    results.metadata.update({"checkpoint": out["checkpoint"], "publish": out["publish"]})
    outputs = namedtuple("EvaluateOutputs", ["checkpoint", "publish", "publish_reason"])
    return outputs(out["checkpoint"], out["publish"], out["publish_reason"])


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish_skipped(reason: str) -> str:
    """Runs instead of publish when the gate says no: the one-line reason, in the log and as the output."""
    print(f"fish-speech pipeline: {reason}")
    return reason
