#!/usr/bin/env python3
"""The Kubeflow pipeline: LoRA fine-tuning of Fish Speech / OpenAudio S1-mini on a folder or bucket of clips.

    python pipeline.py --compile [--output fish-speech-lora.yaml]
    python pipeline.py --run-local [--data examples/demo-voice] [--base tiny|hf://...] [--output runs/local]
    python pipeline.py --submit --host URL [--experiment NAME] [--param k=v ...]
    python pipeline.py --schedule "CRON" --host URL [--max-concurrency 1] [--no-catchup] [--param k=v ...]

Wiring only: every step is a component in components/ that calls one `fish-speech` command. Images come
from images/images.json (override the registry and tag with IMAGE_REGISTRY / IMAGE_TAG, or --registry
/ --tag, as for `make build-images`).
"""

# No `from __future__ import annotations`: KFP reads the pipeline function's annotation objects.
import argparse
import builtins
import functools
import inspect
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

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

# Small settings for `--run-local` on a CPU: tiny random models, a few training steps.
LOCAL_DEFAULTS: dict[str, Any] = {
    "base_model": "tiny",
    "max_steps": 4,
    "save_every": 2,
    "batch_size": 2,
    "num_vq_shards": 2,
    "vq_batch_size": 4,
}

log = logging.getLogger("pipeline")


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
def build_pipeline(retries: bool = True):
    """The pipeline (a KFP GraphComponent). Built on first use, so IMAGE_REGISTRY/IMAGE_TAG set by
    `main` decide the images. `retries=False` (the local run) fails at once instead of backing off:
    retries are for preempted pods on a cluster."""
    gpu_retry = GPU_RETRY if retries else None
    io_retry = IO_RETRY if retries else None
    from kfp import dsl

    import components as c

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fetch clips and base weights, validate, normalize, extract VQ codes (sharded), "
        "build the protos dataset, LoRA-train, merge, publish.",
    )
    def fish_speech_lora(
        data_source: str = f"{WORKSPACE_MOUNT}/data",
        base_model: str = "hf://fishaudio/openaudio-s1-mini",
        base_revision: str = "",
        lora_config: str = "r_8_alpha_16",
        max_steps: int = 1000,
        batch_size: int = 4,
        accumulate_grad_batches: int = 1,
        learning_rate: float = 1e-4,
        val_fraction: float = 0.1,
        save_every: int = 100,
        checkpoint: str = "last",
        max_clip_seconds: float = 190.0,
        loudness: float = -23.0,
        peak: float = -1.0,
        num_vq_shards: int = 2,
        vq_batch_size: int = 16,
        vq_precision: str = "float32",
        accelerator_type: str = "nvidia.com/gpu",
        accelerator_count: int = 1,
        gpu_node_selector: dict = DEFAULT_GPU_NODE_SELECTOR,
        gpu_tolerations: list = DEFAULT_GPU_TOLERATIONS,
        workspace_pvc: str = WORKSPACE_PVC,
        checkpoint_root: str = f"{WORKSPACE_MOUNT}/checkpoints",
        data_mirror_root: str = f"{WORKSPACE_MOUNT}/mirror",
        publish_destination: str = "",
    ):
        status = c.report_status(
            data_source=data_source, base_model=base_model, publish_destination=publish_destination
        )
        status.set_caching_options(False)
        with dsl.ExitHandler(status, name="fine-tune"):
            weights = c.fetch_weights(source=base_model, revision=base_revision)
            _retry(_on_workspace(_with_storage_secrets(weights), workspace_pvc), io_retry)

            # Never cached: its output (the hash) is what makes the data steps' cache keys content-based.
            hashed = c.content_hash(source=data_source, mirror_root=data_mirror_root).set_caching_options(
                False
            )
            _retry(_on_workspace(_with_storage_secrets(hashed), workspace_pvc), io_retry)
            digest = hashed.output

            raw = c.fetch_data(source=data_source, content_hash=digest, mirror_root=data_mirror_root)
            _retry(_on_workspace(_with_storage_secrets(raw), workspace_pvc), io_retry)

            checked = c.validate(
                data=raw.outputs["data"], content_hash=digest, max_clip_seconds=max_clip_seconds
            )
            normalized = c.normalize(
                data=raw.outputs["data"],
                content_hash=digest,
                loudness=loudness,
                peak=peak,
                max_clip_seconds=max_clip_seconds,
            ).after(checked)

            shards = c.plan_shards(num_shards=num_vq_shards)
            with dsl.ParallelFor(shards.output, name="vq-shards") as shard_index:
                codes = c.extract_vq(
                    data=normalized.outputs["normalized"],
                    weights=weights.outputs["model"],
                    shard_index=shard_index,
                    num_shards=num_vq_shards,
                    content_hash=digest,
                    batch_size=vq_batch_size,
                    precision=vq_precision,
                    gpu_type=accelerator_type,
                    gpu_count=accelerator_count,
                )
                _on_gpu_pool(
                    codes, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations, gpu_retry
                )

            dataset = c.build_dataset(
                data=normalized.outputs["normalized"],
                codes=dsl.Collected(codes.outputs["codes"]),
                content_hash=digest,
            )

            train = c.lora_train(
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
            )
            _on_gpu_pool(
                train, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations, gpu_retry
            )
            # checkpoint_root: a path on the workspace PVC, or a gs:// / s3:// prefix (hence the secrets)
            _on_workspace(_with_storage_secrets(train), workspace_pvc)

            merged = c.merge_lora(
                base_model=weights.outputs["model"],
                lora=train.outputs["lora"],
                lora_config=lora_config,
                checkpoint=checkpoint,
                gpu_type=accelerator_type,
                gpu_count=accelerator_count,
            )
            _on_gpu_pool(
                merged, accelerator_type, accelerator_count, gpu_node_selector, gpu_tolerations, gpu_retry
            )

            with dsl.If(publish_destination != "", name="publish-requested"):
                published = c.publish(model=merged.outputs["merged"], destination=publish_destination)
                published.set_caching_options(False)  # an upload is a side effect: always do it
                _retry(_on_workspace(_with_storage_secrets(published), workspace_pvc), io_retry)

    return fish_speech_lora


def pipeline_parameters() -> dict[str, inspect.Parameter]:
    """The pipeline's parameters by name (with their Python annotation and default)."""
    return dict(inspect.signature(build_pipeline().pipeline_func).parameters)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`k=v` strings to typed pipeline arguments (int, float, bool, JSON for dict/list, else str)."""
    params = pipeline_parameters()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--param {pair!r}: expected NAME=VALUE")
        if key not in params:
            raise SystemExit(f"--param {key}: unknown parameter; known: {', '.join(params)}")
        kind = params[key].annotation
        try:
            if kind in (dict, list):
                parsed = json.loads(value)
                if not isinstance(parsed, kind):
                    raise ValueError(f"not a JSON {kind.__name__}")
            elif kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError("not a boolean")
                parsed = value.lower() in ("true", "1", "yes")
            elif kind in (int, float):
                parsed = kind(value)
            else:
                parsed = value
        except ValueError as e:
            raise SystemExit(f"--param {key}={value!r}: {e}") from None
        out[key] = parsed
    return out


def compile_pipeline(output: str | os.PathLike = DEFAULT_PACKAGE) -> Path:
    """Write the pipeline YAML (pipeline spec + Kubernetes platform spec) to `output`, atomically."""
    from kfp import compiler

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{output.name}.", suffix=".yaml", dir=output.parent)
    os.close(fd)
    try:
        compiler.Compiler().compile(build_pipeline(), package_path=tmp)
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output


# ---------------------------------------------------------------------------------------------- run-local


def _find_outputs(run_dir: Path) -> dict[str, Any]:
    """Paths of the run's main outputs and every task's logged metrics, from kfp.local's output folder."""

    def one(pattern: str) -> str | None:
        hits = sorted(run_dir.glob(pattern))
        return str(hits[0]) if hits else None

    metrics: dict[str, dict] = {}
    for executor_output in sorted(run_dir.rglob("executor_output.json")):
        task = executor_output.parent.relative_to(run_dir).as_posix()
        data = json.loads(executor_output.read_text(encoding="utf-8"))
        artifacts = data.get("artifacts", {}).get("metrics", {}).get("artifacts", [])
        if artifacts and artifacts[0].get("metadata"):
            metrics[task] = artifacts[0]["metadata"]
    return {
        "run_dir": str(run_dir),
        "merged_model": one("merge-lora/merged"),
        "lora_checkpoints": one("lora-train/lora"),
        "validation_report": one("validate/report"),
        "loss_plot": one("lora-train/loss_plot"),
        "status_report": one("report-status/report"),
        "published": None,
        "metrics": metrics,
    }


def run_local(
    data: str | os.PathLike,
    base: str = "tiny",
    output: str | os.PathLike = REPO / "runs" / "local",
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole DAG with kfp.local in this Python environment; return where the outputs are.

    Components run as subprocesses of this interpreter (SubprocessRunner(use_venv=False)), which must
    have `fish_speech` installed, exactly as the step images do. Kubernetes settings do not apply here.
    """
    from kfp import local

    if "://" not in str(data):  # a bucket URI goes to fetch-data as it is
        data = Path(data).resolve()
        if not data.is_dir():
            raise SystemExit(f"--data {data}: no such folder")
    output = Path(output).resolve()
    root = output / "pipeline-root"
    root.mkdir(parents=True, exist_ok=True)
    arguments: dict[str, Any] = {
        **LOCAL_DEFAULTS,
        "base_model": base,
        "data_source": str(data),
        "checkpoint_root": str(output / "checkpoints"),
        "data_mirror_root": str(output / "mirror"),
        "publish_destination": str(output / "model"),
        **(params or {}),
    }
    # The step images' names are not Python images: kfp.local warns about every task; that is expected.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    log.info("running %s locally with kfp.local; outputs under %s", PIPELINE_NAME, output)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    before = {p.name for p in root.iterdir()}
    started = time.monotonic()
    # kfp.local swaps builtins.print for an indenting one per task, racily when tasks run in parallel
    # threads (the ParallelFor shards); put the real one back afterwards.
    real_print = builtins.print
    try:
        build_pipeline(retries=False)(**arguments)
    finally:
        builtins.print = real_print
    seconds = time.monotonic() - started
    new = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in before)
    if not new:
        raise RuntimeError(f"kfp.local wrote no run folder under {root}")
    outputs = _find_outputs(new[-1])
    outputs["published"] = arguments["publish_destination"] or None
    outputs["arguments"] = arguments
    outputs["wall_seconds"] = round(seconds, 1)
    summary = output / "run-summary.json"
    summary.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    outputs["summary"] = str(summary)
    return outputs


# ------------------------------------------------------------------------------------------ submit/schedule


def _client(host: str, namespace: str | None):
    import kfp

    return kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))


def _cron(expr: str) -> str:
    """KFP wants 6 fields (seconds first); accept the usual 5-field form too."""
    fields = expr.split()
    if len(fields) == 5:
        return "0 " + " ".join(fields)
    if len(fields) == 6:
        return " ".join(fields)
    raise SystemExit(f"--schedule {expr!r}: a cron expression has 5 (or 6, with seconds) fields")


def submit(
    host: str,
    experiment: str,
    params: dict[str, Any],
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """Compile and start one run; returns the run id."""
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml")
        result = _client(host, namespace).create_run_from_pipeline_package(
            str(package),
            arguments=params,
            run_name=f"{PIPELINE_NAME} {time.strftime('%Y-%m-%d %H:%M:%S')}",
            experiment_name=experiment,
            namespace=namespace,
            service_account=service_account,
        )
    return result.run_id


def schedule(
    host: str,
    cron: str,
    experiment: str,
    params: dict[str, Any],
    max_concurrency: int = 1,
    no_catchup: bool = False,
    namespace: str | None = None,
    service_account: str | None = None,
) -> str:
    """Compile and create a recurring run; returns its id."""
    cron = _cron(cron)
    client = _client(host, namespace)
    exp = client.create_experiment(name=experiment, namespace=namespace)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / f"{PIPELINE_NAME}.yaml")
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=f"{PIPELINE_NAME} ({cron})",
            description="retrains when new clips arrive; unchanged clips hit the data steps' cache",
            cron_expression=cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=params,
            pipeline_package_path=str(package),
            service_account=service_account,
        )
    return job.recurring_run_id


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--compile", action="store_true", help="write the pipeline YAML")
    mode.add_argument("--run-local", action="store_true", help="run the whole DAG here with kfp.local")
    mode.add_argument("--submit", action="store_true", help="start one run on a KFP server")
    mode.add_argument("--schedule", metavar="CRON", help="create a recurring run on a KFP server")
    parser.add_argument(
        "--output",
        help="compile: YAML path (default runs/fish-speech-lora.yaml); "
        "run-local: output folder (default runs/local)",
    )
    parser.add_argument(
        "--data", default=str(REPO / "examples" / "demo-voice"), help="run-local: clip folder, gs:// or s3://"
    )
    parser.add_argument("--base", default="tiny", help="run-local: base model source (tiny, hf://..., dir)")
    parser.add_argument("--host", help="KFP API endpoint (submit, schedule)")
    parser.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    parser.add_argument(
        "--service-account",
        help="Kubernetes service account of the run's pods (manifests/: fish-speech-pipeline)",
    )
    parser.add_argument("--experiment", default=PIPELINE_NAME, help="experiment name (submit, schedule)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="pipeline argument"
    )
    parser.add_argument("--max-concurrency", type=int, default=1, help="schedule: runs at once (default 1)")
    parser.add_argument("--no-catchup", action="store_true", help="schedule: skip runs missed while paused")
    parser.add_argument("--registry", help="image registry (default: IMAGE_REGISTRY, else images.json)")
    parser.add_argument("--tag", help="image tag (default: IMAGE_TAG, else images.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.registry:
        os.environ["IMAGE_REGISTRY"] = args.registry
    if args.tag:
        os.environ["IMAGE_TAG"] = args.tag
    params = parse_params(args.param)

    if args.compile:
        path = compile_pipeline(args.output or DEFAULT_PACKAGE)
        print(f"wrote {path}")
    elif args.run_local:
        outputs = run_local(args.data, args.base, args.output or REPO / "runs" / "local", params)
        print(json.dumps({k: v for k, v in outputs.items() if k not in ("metrics", "arguments")}, indent=2))
    else:
        if not args.host:
            parser.error("--submit and --schedule need --host URL")
        if args.submit:
            run_id = submit(args.host, args.experiment, params, args.namespace, args.service_account)
            print(f"submitted run {run_id} to {args.host}")
        else:
            job_id = schedule(
                args.host,
                args.schedule,
                args.experiment,
                params,
                args.max_concurrency,
                args.no_catchup,
                args.namespace,
                args.service_account,
            )
            print(f"created recurring run {job_id} ({_cron(args.schedule)}) on {args.host}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
