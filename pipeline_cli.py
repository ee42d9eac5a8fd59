"""The modes of `python pipeline.py` besides the recipe itself: compile, run-local, submit, schedule.

    python pipeline.py --compile [--output fish-speech-lora.yaml] [--merge-on-gpu]
    python pipeline.py --run-local [--data examples/demo-voice] [--base tiny|hf://...] [--output runs/local]
    python pipeline.py --submit --host URL [--experiment NAME] [--param k=v ...]
    python pipeline.py --schedule "CRON" --host URL [--max-concurrency 1] [--no-catchup] [--param k=v ...]

`pipeline.py` holds the DSL; this module runs it (kfp.local), or compiles it and hands it to a KFP server.
"""

# No `from __future__ import annotations`: parse_params compares the pipeline's annotation objects.
import argparse
import builtins
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from pipeline import (
    DEFAULT_PACKAGE,
    PIPELINE_NAME,
    REPO,
    build_pipeline,
    compile_pipeline,
    pipeline_parameters,
)

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
    """The command line of `python pipeline.py` (see the module docstring)."""
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
    parser.add_argument(
        "--merge-on-gpu",
        action="store_true",
        help="compile: run merge-lora on the GPU pool (default: CPU pool)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.registry:
        os.environ["IMAGE_REGISTRY"] = args.registry
    if args.tag:
        os.environ["IMAGE_TAG"] = args.tag
    params = parse_params(args.param)

    if args.compile:
        path = compile_pipeline(args.output or DEFAULT_PACKAGE, merge_on_gpu=args.merge_on_gpu)
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
