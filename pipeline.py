#!/usr/bin/env python3
"""The Kubeflow pipeline: LoRA fine-tuning of Fish Speech / OpenAudio S1-mini on a folder or bucket of clips.

    python pipeline.py --compile [--output fish-speech-lora.yaml] [--merge-on-gpu]
    python pipeline.py --run-local [--data DIR|gs://...|s3://...] [--base tiny|hf://...] [--output runs/local] [-v]
    python pipeline.py --submit --host URL [--experiment NAME] [--param k=v ...]
    python pipeline.py --schedule "CRON" --host URL [--max-concurrency 1] [--no-catchup] [--param k=v ...]

This file is the recipe: constants, the platform helpers and the DSL, plus `compile_pipeline`. Every
step is a component in components/ that calls one function of fish_speech/steps/; the modes above
live in pipeline_cli.py. Images come from images/images.json (override the registry and tag with
IMAGE_REGISTRY / IMAGE_TAG, or --registry / --tag, as for `make build-images`).
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotation objects.
import functools
import inspect
import os
import sys
from pathlib import Path

from fish_speech.codec.options import ExtractOptions
from fish_speech.dataset.normalize import Settings as NormalizeSettings
from fish_speech.dataset.validate import DEFAULT_MAX_SECONDS
from fish_speech.evaluate.models import DEFAULT_ASR, DEFAULT_SPEAKER_MODEL
from fish_speech.fileio import atomic_path
from fish_speech.options import option_defaults
from fish_speech.text2semantic.options import TrainOptions

REPO = Path(__file__).resolve().parent
PIPELINE_NAME = "fish-speech-lora"
DEFAULT_PACKAGE = REPO / "runs" / f"{PIPELINE_NAME}.yaml"  # runs/ is git-ignored

# Kubernetes objects the pipeline refers to by name; manifests/base creates them (keep in sync: a test checks).
WORKSPACE_PVC = "fish-speech-workspace"
WORKSPACE_MOUNT = "/mnt/fish-speech"
HF_SECRET = "fish-speech-hf"
S3_SECRET = "fish-speech-s3"
GCS_SECRET = "fish-speech-gcs"
GCS_MOUNT = "/var/secrets/google"
SECRET_ENV = {
    HF_SECRET: {"HF_TOKEN": "HF_TOKEN"},
    S3_SECRET: {
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "S3_ENDPOINT_URL": "S3_ENDPOINT_URL",
    },
}
GCS_KEY_FILE = "key.json"  # the key inside the GCS secret; GOOGLE_APPLICATION_CREDENTIALS points at it
SHM_SIZE = "16Gi"  # memory-backed /dev/shm for DataLoader workers (the container default is 64 MiB)

# GPU retries: exponential back-off from 1 min, so a preempted node has time to be replaced.
GPU_RETRY = {
    "num_retries": 3,
    "backoff_duration": "60s",
    "backoff_factor": 2.0,
    "backoff_max_duration": "3600s",
}
IO_RETRY = {
    "num_retries": 2,
    "backoff_duration": "30s",
    "backoff_factor": 2.0,
    "backoff_max_duration": "600s",
}

DEFAULT_GPU_NODE_SELECTOR = {"nvidia.com/gpu.present": "true"}
DEFAULT_GPU_TOLERATIONS = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]

# The steps' own defaults, read from where each is declared (fish_speech/**/options.py and friends).
TRAIN = option_defaults(TrainOptions)
NORMALIZE = NormalizeSettings()
VQ = ExtractOptions()
# The command's 10000 steps are upstream's config; the pipeline's input is one voice (minutes to an hour
# of clips), where a LoRA is trained long before that, and each step is GPU time: 1000, on purpose.
PIPELINE_MAX_STEPS = 1000
# VQ extraction is fanned out over this many GPU pods by default.
DEFAULT_VQ_SHARDS = 2
# merge-lora needs memory (the base weights plus a float32 merged copy), not a GPU: it never uses CUDA,
# so it runs on the CPU pool with this memory request. `--merge-on-gpu` puts it on the GPU pool instead
# (for clusters whose CPU nodes are small).
MERGE_MEMORY = "16Gi"
# evaluate's candidates and sentences (its command defaults)
EVAL_CHECKPOINTS = "earliest,best,last"
EVAL_SENTENCES = 8


def _with_storage_secrets(task):
    """HF token, S3/MinIO keys and GCS credentials from Kubernetes Secrets, by reference (all optional)."""
    from kfp import kubernetes

    for secret, keys in SECRET_ENV.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys, optional=True)
    kubernetes.use_secret_as_volume(task, secret_name=GCS_SECRET, mount_path=GCS_MOUNT, optional=True)
    task.set_env_variable("GOOGLE_APPLICATION_CREDENTIALS", f"{GCS_MOUNT}/{GCS_KEY_FILE}")
    return task


def _retry(task, policy: dict | None):
    """Retries with exponential back-off, unless `policy` is None."""
    return task.set_retry(**policy) if policy else task


def _on_gpu_pool(task, accelerator_type, accelerator_count, node_selector, tolerations, retry: dict | None):
    """GPU request, the GPU pool's node selector and tolerations, /dev/shm in memory, retries."""
    from kfp import kubernetes

    task.set_accelerator_type(accelerator_type).set_accelerator_limit(accelerator_count)
    kubernetes.add_node_selector_json(task, node_selector)
    kubernetes.add_toleration_json(task, tolerations)
    kubernetes.empty_dir_mount(
        task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE
    )
    return _retry(task, retry)


def _on_workspace(task, pvc_name):
    """The workspace PVC at /mnt/fish-speech: data paths, the fetch mirror, training checkpoints."""
    from kfp import kubernetes

    kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=WORKSPACE_MOUNT)
    return task


@functools.cache
def build_pipeline(retries: bool = True, merge_on_gpu: bool = False):
    """The pipeline (a KFP GraphComponent). Built on first use, so IMAGE_REGISTRY/IMAGE_TAG set by
    `pipeline_cli.main` decide the images. `retries=False` (the local run) fails at once instead of
    backing off: retries are for preempted pods on a cluster. `merge_on_gpu`: see MERGE_MEMORY."""
    gpu_retry = GPU_RETRY if retries else None
    io_retry = IO_RETRY if retries else None
    from kfp import dsl

    import components as c
    from components.images import GPU_IMAGE

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fetch clips and base weights, validate, normalize, extract VQ codes (sharded), "
        "build the protos dataset, LoRA-train, evaluate the checkpoints, merge the chosen one, publish "
        "(with publish_policy=if_better only when it beats the base model).",
    )
    def fish_speech_lora(
        data_source: str = f"{WORKSPACE_MOUNT}/data",
        base_model: str = "hf://fishaudio/openaudio-s1-mini",
        base_revision: str = "",
        lora_config: str = TRAIN["lora_config"],
        max_steps: int = PIPELINE_MAX_STEPS,
        batch_size: int = TRAIN["batch_size"],
        accumulate_grad_batches: int = TRAIN["accumulate_grad_batches"],
        learning_rate: float = TRAIN["learning_rate"],
        val_fraction: float = TRAIN["val_fraction"],
        save_every: int = TRAIN["save_every"],
        checkpoint: str = "auto",
        eval_checkpoints: str = EVAL_CHECKPOINTS,
        eval_sentences: int = EVAL_SENTENCES,
        asr_model: str = DEFAULT_ASR,
        speaker_model: str = DEFAULT_SPEAKER_MODEL,
        publish_policy: str = "if_better",
        max_clip_seconds: float = DEFAULT_MAX_SECONDS,
        loudness: float = NORMALIZE.loudness,
        peak: float = NORMALIZE.peak,
        num_vq_shards: int = DEFAULT_VQ_SHARDS,
        vq_batch_size: int = VQ.batch_size,
        vq_precision: str = VQ.precision,
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 1,
        gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
        gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
        workspace_pvc: str = WORKSPACE_PVC,
        checkpoint_root: str = f"{WORKSPACE_MOUNT}/checkpoints",
        data_mirror_root: str = f"{WORKSPACE_MOUNT}/mirror",
        publish_destination: str = "",
        train_nodes: int = 1,
        trainer_runtime: str = "torch-distributed",
        trainjob_timeout_hours: float = 72.0,
        eval_model_cache: str = f"{WORKSPACE_MOUNT}/eval-models",
    ):
        """LoRA fine-tuning of Fish Speech / OpenAudio S1-mini on a folder or bucket of clips.

        Args:
            data_source: Clips (DATA/SPEAKER/clip.wav + clip.lab): gs://..., s3://..., or a path on the workspace PVC (mounted at /mnt/fish-speech).
            base_model: Base weights: hf://ORG/NAME, gs://..., s3://..., a PVC path, or tiny (a random model, for tests).
            base_revision: Commit, branch or tag of an hf:// base model (empty: the default branch).
            lora_config: LoRA config of training and merge: r_8_alpha_16, r_32_alpha_16_fast or r_<R>_alpha_<A>.
            max_steps: Optimizer steps of LoRA training.
            batch_size: Samples per batch and GPU.
            accumulate_grad_batches: Batches per optimizer step.
            learning_rate: AdamW learning rate.
            val_fraction: Share of each speaker's clips held out for validation (0: none).
            save_every: Checkpoint (and validate) every N steps.
            checkpoint: What merge-lora merges: auto (evaluate's choice), best, last, earliest, step_N or a checkpoint file name.
            eval_checkpoints: Checkpoints evaluate scores besides the base model: earliest,best,last, all, or step_N,...
            eval_sentences: Held-out sentences evaluate synthesizes and scores per candidate.
            asr_model: Whisper model of evaluate's CER/WER (hf://, gs://, s3://, a PVC path, or tiny).
            speaker_model: WavLM x-vector model of evaluate's speaker similarity (hf://, gs://, s3://, a PVC path, or tiny).
            publish_policy: if_better (publish only when the merged checkpoint beats the base model) or always.
            max_clip_seconds: Clips longer than this are skipped (0: no limit; 190 is the longest the codec accepts).
            loudness: Loudness target of normalize, LUFS (BS.1770-4).
            peak: Peak target of normalize before the loudness gain, dBFS.
            num_vq_shards: Parallel extract-vq tasks (one GPU pod each).
            vq_batch_size: Clips per extract-vq batch.
            vq_precision: float32 (upstream's codes) or bfloat16 (faster; may change codes).
            accelerator_type: Accelerator of the GPU steps (extract-vq, lora-train, evaluate).
            accelerator_count: Accelerators per GPU step (more than 1: DDP training).
            gpu_node_selector: Node selector (JSON) that puts the GPU steps on the GPU pool.
            gpu_tolerations: Tolerations (JSON list) of the GPU steps for the GPU pool's taints.
            workspace_pvc: PVC mounted at /mnt/fish-speech: data paths, the data mirror, training checkpoints.
            checkpoint_root: Where lora-train keeps checkpoints so a retried task resumes: a PVC path or gs:// / s3:// prefix (empty: inside the artifact).
            data_mirror_root: Where content-hash keeps an incremental mirror of the clips (empty: no mirror).
            publish_destination: Copy the merged model there (gs://, s3://, hf://, PVC path; empty: no publish step).
            train_nodes: GPU nodes for lora-train (1: one pod; more: a Kubeflow Trainer TrainJob of that many nodes with accelerator_count GPUs each; checkpoint_root must be on a ReadWriteMany workspace PVC).
            trainer_runtime: The Kubeflow Trainer torch ClusterTrainingRuntime the TrainJob uses (train_nodes > 1).
            trainjob_timeout_hours: Fail lora-train when its TrainJob has not completed after this many hours (train_nodes > 1).
            eval_model_cache: Where evaluate keeps the fetched ASR and speaker models (a PVC path).
        """

        def storage(task):  # a task that reads or writes a bucket or the workspace volume
            return _on_workspace(_with_storage_secrets(task), workspace_pvc)

        def io_step(task):  # a storage task whose failures are worth retrying
            return _retry(storage(task), io_retry)

        def gpu_step(task):
            pool = (accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations)
            return _on_gpu_pool(task, *pool, gpu_retry)

        status = c.report_status(
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            data_source=data_source,
            base_model=base_model,
            publish_destination=publish_destination,
        ).set_caching_options(False)
        with dsl.ExitHandler(status, name="fine-tune"):
            weights = io_step(c.fetch_weights(source=base_model, revision=base_revision))
            # Never cached: its output (the hash) is what makes the data steps' cache keys content-based.
            hashed = io_step(c.content_hash(source=data_source, mirror_root=data_mirror_root))
            hashed.set_caching_options(False)
            digest = hashed.output
            raw = io_step(c.fetch_data(source=data_source, content_hash=digest, mirror_root=data_mirror_root))
            data = raw.outputs["data"]

            checked = c.validate(data=data, content_hash=digest, max_clip_seconds=max_clip_seconds)
            normalized = c.normalize(
                data=data,
                content_hash=digest,
                loudness=loudness,
                peak=peak,
                max_clip_seconds=max_clip_seconds,
            ).after(checked)
            clips = normalized.outputs["normalized"]

            shards = c.plan_shards(num_shards=num_vq_shards)
            with dsl.ParallelFor(shards.output, name="vq-shards") as shard_index:
                codes = gpu_step(
                    c.extract_vq(
                        data=clips,
                        weights=weights.outputs["model"],
                        shard_index=shard_index,
                        num_shards=num_vq_shards,
                        content_hash=digest,
                        batch_size=vq_batch_size,
                        precision=vq_precision,
                        gpu_type=accelerator_type,
                        gpu_count=accelerator_count,
                    )
                )
            dataset = c.build_dataset(
                data=clips, codes=dsl.Collected(codes.outputs["codes"]), content_hash=digest
            )

            train_inputs = dict(
                protos=dataset.outputs["protos"],
                base_model=weights.outputs["model"],
                content_hash=digest,
                lora_config=lora_config,
                max_steps=max_steps,
                batch_size=batch_size,
                accumulate_grad_batches=accumulate_grad_batches,
                learning_rate=learning_rate,
                val_fraction=val_fraction,
                save_every=save_every,
                checkpoint_root=checkpoint_root,
                gpu_type=accelerator_type,
                gpu_count=accelerator_count,
                train_nodes=train_nodes,
                trainer_runtime=trainer_runtime,
                trainjob_image=GPU_IMAGE,
                trainjob_timeout_hours=trainjob_timeout_hours,
                gpu_node_selector=gpu_node_selector,
                gpu_tolerations=gpu_tolerations,
                workspace_pvc=workspace_pvc,
                workspace_mount=WORKSPACE_MOUNT,
            )
            with dsl.If(train_nodes <= 1, name="one-node"):
                # checkpoint_root: a path on the workspace PVC, or a gs:// / s3:// prefix (hence the secrets)
                train = storage(gpu_step(c.lora_train(**train_inputs)))
            with dsl.Else(name="trainjob"):
                # a light pod (no GPU) that runs the training as a Kubeflow Trainer TrainJob of
                # train_nodes GPU nodes, waits for it and collects the checkpoints from the PVC
                train_on_nodes = _retry(storage(c.lora_train(**train_inputs)), gpu_retry)
            lora = dsl.OneOf(train.outputs["lora"], train_on_nodes.outputs["lora"])

            # checkpoint=auto merges evaluate's choice; best/last/earliest/step_N merge that one (also scored).
            # Storage: the ASR and speaker models are fetched (hf:// needs the token) into a cache on the PVC.
            scored = storage(
                gpu_step(
                    c.evaluate(
                        base_model=weights.outputs["model"],
                        lora=lora,
                        data=clips,
                        codes=dsl.Collected(codes.outputs["codes"]),
                        checkpoint=checkpoint,
                        checkpoints=eval_checkpoints,
                        sentences=eval_sentences,
                        asr_model=asr_model,
                        speaker_model=speaker_model,
                        publish_policy=publish_policy,
                        model_cache=eval_model_cache,
                        gpu_type=accelerator_type,
                        gpu_count=accelerator_count,
                    )
                )
            ).set_display_name("evaluate checkpoints")

            merged = c.merge_lora(
                base_model=weights.outputs["model"],
                lora=lora,
                lora_config=lora_config,
                checkpoint=scored.outputs["checkpoint"],
            )
            if merge_on_gpu:
                gpu_step(merged)
            else:
                merged.set_memory_request(MERGE_MEMORY)

            with dsl.If(publish_destination != "", name="publish-requested"):
                with dsl.If(scored.outputs["publish"] == "true", name="publish-gate"):
                    published = io_step(
                        c.publish(model=merged.outputs["merged"], destination=publish_destination)
                    )
                    published.set_caching_options(False)  # an upload is a side effect: always do it
                with dsl.Else(name="publish-refused"):
                    c.publish_skipped(reason=scored.outputs["publish_reason"]).set_caching_options(False)

    return fish_speech_lora


def pipeline_parameters() -> dict[str, inspect.Parameter]:
    """The pipeline's parameters by name (with their Python annotation and default)."""
    return dict(inspect.signature(build_pipeline().pipeline_func).parameters)


def compile_pipeline(
    output: str | os.PathLike = DEFAULT_PACKAGE,
    merge_on_gpu: bool = False,
    params: dict | None = None,
) -> Path:
    """Write the pipeline YAML (pipeline spec + Kubernetes platform spec) to `output`, atomically.

    `params` replace the defaults of those pipeline parameters in the YAML (what the UI pre-fills).
    """
    from kfp import compiler

    output = Path(output)
    with atomic_path(output, suffix=".yaml") as tmp:
        compiler.Compiler().compile(
            build_pipeline(merge_on_gpu=merge_on_gpu),
            package_path=str(tmp),
            pipeline_parameters=params or None,
        )
    return output


def parameter_help() -> dict[str, str]:
    """Each pipeline parameter's description, from the pipeline function's docstring `Args:`."""
    import docstring_parser  # a kfp dependency: KFP reads the same docstring for the YAML

    doc = docstring_parser.parse(build_pipeline().pipeline_func.__doc__ or "")
    return {p.arg_name: " ".join((p.description or "").split()) for p in doc.params}


def main(argv: list[str] | None = None) -> int:
    """`python pipeline.py --compile | --run-local | --submit | --schedule` (see pipeline_cli.py)."""
    import pipeline_cli

    return pipeline_cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
