"""The modes of `python pipeline.py` besides the recipe itself: compile, run-local, submit, schedule.

    python pipeline.py --compile [--output fish-speech-lora.yaml] [--merge-on-gpu]
    python pipeline.py --run-local [--data DIR|gs://...|s3://...] [--base tiny|hf://...] [--output runs/local] [-v]
    python pipeline.py --submit --host URL [--experiment NAME] [--param k=v ...]
    python pipeline.py --schedule "CRON" --host URL [--max-concurrency 1] [--no-catchup] [--param k=v ...]

`pipeline.py` holds the DSL; this module runs it (kfp.local), or compiles it and hands it to a KFP server.
"""

# No `from __future__ import annotations`: parse_params compares the pipeline's annotation objects.
import argparse
import builtins
import io
import json
import logging
import os
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline import (
    DEFAULT_PACKAGE,
    PIPELINE_NAME,
    REPO,
    build_pipeline,
    compile_pipeline,
    parameter_help,
    pipeline_parameters,
)

# The demo's settings (`make demo`, `--run-local` without `--data`): tiny random models, a few training
# steps on a CPU. A local run on your own clips (`--data`) uses the pipeline's defaults instead.
DEMO_DATA = REPO / "examples" / "demo-voice"
DEMO_DEFAULTS: dict[str, Any] = {
    "base_model": "tiny",
    "max_steps": 4,
    "save_every": 2,
    "batch_size": 2,
    "num_vq_shards": 2,
    "vq_batch_size": 4,
    "asr_model": "tiny",
    "speaker_model": "tiny",
    "eval_sentences": 4,
    # random tiny models cannot beat anything: publish anyway, so the demo shows the published model
    "publish_policy": "always",
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


PLACEHOLDER_REGISTRY = "ghcr.io/example"  # images/images.json's registry until you set your own


def check_images() -> None:
    """Refuse to compile against the placeholder registry unless images.json holds pushed digests."""
    from components.images import image_ref

    refs = [image_ref(kind) for kind in ("cpu", "gpu")]
    placeholder = [r for r in refs if r.startswith(PLACEHOLDER_REGISTRY + "/") and "@sha256:" not in r]
    if placeholder:
        raise SystemExit(
            f"the step images would be {', '.join(placeholder)}: the placeholder registry of "
            "images/images.json, which no cluster can pull. Build and push yours "
            "(make build-images push-images IMAGE_REGISTRY=REG) and pass --registry REG (or IMAGE_REGISTRY)"
        )


def _parameters_epilog() -> str:
    try:
        params, helps = pipeline_parameters(), parameter_help()
    except Exception as e:  # --help must work even where kfp is missing or broken
        return f"(pipeline parameters unavailable: {type(e).__name__}: {e})"
    lines = ["pipeline parameters (--param NAME=VALUE; defaults in brackets):"]
    for name, p in params.items():
        default = json.dumps(p.default) if isinstance(p.default, (dict, list)) else p.default
        lines.append(f"  {name} [{default}]: {helps.get(name, '')}")
    return "\n".join(lines)


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
        "evaluation_report": one("evaluate/report"),
        "status_report": one("report-status/report"),
        "published": None,
        "metrics": metrics,
    }


def _kfp_local_resolves_oneof_artifacts() -> None:
    """kfp.local resolves `dsl.OneOf` of parameters only (orchestrator_utils.get_dag_output_artifacts
    rejects several artifact selectors). Resolve artifacts the same way, from the one branch that ran,
    so the two lora-train branches (one pod, or a TrainJob) run locally too."""
    from kfp.local.orchestrator.orchestrator_utils import OrchestratorUtils

    if getattr(OrchestratorUtils.get_dag_output_artifacts, "resolves_oneof", False):
        return

    def get_dag_output_artifacts(cls, dag_outputs_spec, io_store) -> dict[str, Any]:
        outputs = {}
        for key, spec in dag_outputs_spec.artifacts.items():
            found = []
            for selector in spec.artifact_selectors:
                try:
                    found.append(
                        io_store.get_task_output(selector.producer_subtask, selector.output_artifact_key)
                    )
                except (KeyError, ValueError):  # that branch did not run
                    continue
            if len(found) != 1:
                raise ValueError(f"dsl.OneOf output {key!r}: {len(found)} branches produced it, expected one")
            outputs[key] = found[0]
        return outputs

    get_dag_output_artifacts.resolves_oneof = True
    OrchestratorUtils.get_dag_output_artifacts = classmethod(get_dag_output_artifacts)


def local_arguments(
    data: str | os.PathLike,
    base: str | None,
    output: Path,
    params: dict[str, Any] | None,
    demo: bool,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The arguments of a local run and, for each one not at the pipeline's default, where it comes from."""
    defaults = {name: p.default for name, p in pipeline_parameters().items()}
    arguments = dict(defaults)
    origin: dict[str, str] = {}

    def put(values: dict[str, Any], why: str) -> None:
        for key, value in values.items():
            arguments[key] = value
            origin[key] = why

    if demo:
        put(DEMO_DEFAULTS, "demo")
    put(
        {
            "data_source": str(data),
            "checkpoint_root": str(output / "checkpoints"),
            "data_mirror_root": str(output / "mirror"),
            "publish_destination": str(output / "model"),
            "eval_model_cache": str(output / "eval-models"),
        },
        "--data / --output",
    )
    if base:
        put({"base_model": base}, "--base")
    if arguments["base_model"] == "tiny":
        # a random base model is for trying the DAG: score it with the tiny random ASR/speaker models
        # too (no multi-GB download), and publish anyway (random models beat nothing); --param overrides
        put({"asr_model": "tiny", "speaker_model": "tiny", "publish_policy": "always"}, "--base tiny")
    put(dict(params or {}), "--param")
    return arguments, {k: v for k, v in origin.items() if arguments[k] != defaults.get(k) or v == "--param"}


def describe_arguments(arguments: dict[str, Any], origin: dict[str, str]) -> str:
    """The effective parameters of a run, one per line, with the source of each non-default."""
    width = max(map(len, arguments))
    lines = ["parameters of this run:"]
    for key in sorted(arguments):
        shown = json.dumps(arguments[key]) if isinstance(arguments[key], (dict, list)) else arguments[key]
        why = f"  ({origin[key]})" if key in origin else ""
        lines.append(f"  {key:<{width}} = {shown}{why}")
    return "\n".join(lines)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXECUTING = re.compile(r"Executing task '([^']+)'")
_TASK_FAILED = re.compile(r"Task '([^']+)' finished with status FAILURE")
_CLI_ERROR = re.compile(r"fish-speech [\w-]+: error: (.*)")
_EXCEPTION = re.compile(r"^\s*((?:\w+\.)*\w*(?:Error|Exception)): (.*)")
# kfp.local's executor chatter: shown with -v only
_EXECUTOR_NOISE = ("Looking for component", "Loading KFP component", "Wrote executor output file")


class LocalRunLog(io.TextIOBase):
    """stdout during a kfp.local run: drops the executor's JSON dumps and the frames of a failed step's
    traceback (unless verbose; the exception line stays) and records why
    each failed task failed (its first `fish-speech CMD: error:` line, else its last exception line)
    as `failure.json` in its task folder, where report-status and the run summary read it."""

    def __init__(self, out, run_dir: Callable[[], Path | None], verbose: bool = False) -> None:
        self.out = out
        self.run_dir = run_dir
        self.verbose = verbose
        self.buffer = ""
        self.task: str | None = None
        self.cli_errors: dict[str, str] = {}
        self.exceptions: dict[str, str] = {}
        self.failed: list[dict[str, str]] = []
        self.traceback_indent: str | None = None
        self.json_indent: str | None = None  # inside an executor_input dump: its indent ("?": next line)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if self.keep(line):
                self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self.buffer and self.keep(self.buffer):
            self.out.write(self.buffer)
        self.buffer = ""
        self.out.flush()

    def keep(self, line: str) -> bool:
        plain = _ANSI.sub("", line)
        self.observe(plain)
        if self.verbose:
            return True
        indent = plain[: len(plain) - len(plain.lstrip())]
        if self.json_indent == "?":  # the dump's "{": the dump ends at the "}" indented as much
            self.json_indent = indent if plain.strip() == "{" else None
            return self.json_indent is None
        if self.json_indent is not None:
            if plain.strip() == "}" and indent == self.json_indent:
                self.json_indent = None
            return False
        if "[KFP Executor" in plain and "Got executor_input:" in plain:
            self.json_indent = "?"
            return False
        if self.traceback_indent is not None:  # a step's traceback: its last line says it all
            if len(indent) > len(self.traceback_indent) or not plain.strip():
                return False
            self.traceback_indent = None
        if plain.strip() == "Traceback (most recent call last):":
            self.traceback_indent = indent
            return False
        return not ("[KFP Executor" in plain and any(n in plain for n in _EXECUTOR_NOISE))

    def observe(self, plain: str) -> None:
        if m := _EXECUTING.search(plain):
            self.task = m.group(1)
            self.cli_errors.pop(self.task, None)
            self.exceptions.pop(self.task, None)
        elif m := _TASK_FAILED.search(plain):
            task = m.group(1)
            reason = self.cli_errors.get(task) or self.exceptions.get(task) or ""
            self.failed.append({"task": task, "reason": reason})
            run_dir = self.run_dir()
            if run_dir is not None:
                from fish_speech.status import write_failure

                write_failure(run_dir / task, task, reason)
        elif self.task and (m := _CLI_ERROR.search(plain)):
            self.cli_errors.setdefault(self.task, m.group(1).strip())  # the first: the cause
        elif self.task and (m := _EXCEPTION.match(plain)):
            self.exceptions[self.task] = f"{m.group(1)}: {m.group(2)}".strip()  # the last: what ended it


def run_local(
    data: str | os.PathLike | None = None,
    base: str | None = None,
    output: str | os.PathLike = REPO / "runs" / "local",
    params: dict[str, Any] | None = None,
    demo: bool | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the whole DAG with kfp.local in this Python environment; return where the outputs are.

    Without `data`, or with `demo=True`, it is the demo: the bundled demo voice with the demo's
    settings (`DEMO_DEFAULTS`, tiny random models). With `data`, the pipeline's own defaults apply
    (the real base model unless `base` says otherwise). Components run as subprocesses of this
    interpreter (SubprocessRunner(use_venv=False)), which must have `fish_speech` installed, exactly
    as the step images do; Kubernetes settings do not apply. A failed run raises `LocalRunFailed`
    naming the step and its reason, after writing `run-summary.json`.
    """
    from kfp import local

    from fish_speech.fileio import atomic_write_text

    demo = data is None if demo is None else demo
    data = DEMO_DATA if data is None else data
    if "://" not in str(data):  # a bucket URI goes to fetch-data as it is
        data = Path(data).resolve()
        if not data.is_dir():
            raise SystemExit(f"--data {data}: no such folder")
    output = Path(output).resolve()
    root = output / "pipeline-root"
    root.mkdir(parents=True, exist_ok=True)
    arguments, origin = local_arguments(data, base, output, params, demo)
    print(describe_arguments(arguments, origin), flush=True)
    # The step images' names are not Python images, and accelerator settings do not apply here:
    # kfp.local warns about every task; that is expected.
    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    log.info("running %s locally with kfp.local; outputs under %s", PIPELINE_NAME, output)
    before = {p.name for p in root.iterdir()}

    def run_dir() -> Path | None:
        new = sorted(p for p in root.iterdir() if p.is_dir() and p.name not in before)
        return new[-1] if new else None

    started = time.monotonic()
    # kfp.local swaps builtins.print for an indenting one per task, racily when tasks run in parallel
    # threads (the ParallelFor shards); put the real one back afterwards.
    real_print, real_stdout = builtins.print, sys.stdout
    stream = LocalRunLog(real_stdout, run_dir, verbose)
    error: str | None = None
    try:
        sys.stdout = stream  # before local.init: kfp's log handler binds sys.stdout there
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
        _kfp_local_resolves_oneof_artifacts()
        build_pipeline(retries=False)(**arguments)
    except (
        RuntimeError
    ) as e:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
        error = _ANSI.sub("", str(e))
    finally:
        stream.flush()
        builtins.print, sys.stdout = real_print, real_stdout
    seconds = time.monotonic() - started
    folder = run_dir()
    if folder is None:
        raise RuntimeError(f"kfp.local wrote no run folder under {root}")
    outputs = _find_outputs(folder)
    failed = stream.failed
    outputs["state"] = "FAILED" if error else "SUCCEEDED"
    outputs["failed"] = failed
    outputs["published"] = None if error else (arguments["publish_destination"] or None)
    outputs["arguments"] = arguments
    outputs["wall_seconds"] = round(seconds, 1)
    summary = output / "run-summary.json"
    atomic_write_text(summary, json.dumps(outputs, indent=2, sort_keys=True) + "\n")
    outputs["summary"] = str(summary)
    if error:
        raise LocalRunFailed(failed, error, summary)
    return outputs


class LocalRunFailed(RuntimeError):
    """A local run failed: `failed` names the steps and their reasons (also in run-summary.json)."""

    def __init__(self, failed: list[dict[str, str]], kfp_message: str, summary: Path) -> None:
        self.failed, self.kfp_message, self.summary = failed, kfp_message, summary
        said = "; ".join(f"{f['task']}: {f['reason'] or 'failed (see the log above)'}" for f in failed)
        super().__init__(f"the local run failed at {said or kfp_message} (summary: {summary})")


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


def _api_error(error: Exception) -> str:
    """One line for a failed KFP API call (urllib3 and kfp_server_api errors carry the cause inside)."""
    reason = getattr(error, "reason", None)  # urllib3 MaxRetryError: the connection error
    text = str(reason if reason is not None else error)
    if getattr(error, "status", None):  # kfp_server_api.ApiException: HTTP status and reason
        text = f"HTTP {error.status} {getattr(error, 'reason', '')}".strip()
        body = getattr(error, "body", None)
        if body:
            text += f": {' '.join(str(body).split())[:300]}"
    text = " ".join(text.split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """The command line of `python pipeline.py` (see the module docstring)."""
    help_wanted = any(a in ("-h", "--help") for a in (sys.argv[1:] if argv is None else argv))
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog=_parameters_epilog() if help_wanted else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
        "--data",
        help="run-local: clip folder, gs:// or s3:// (default: the demo voice, with the demo's small "
        "settings and tiny models; with --data the pipeline's defaults apply)",
    )
    parser.add_argument(
        "--base",
        help="run-local: base model source (tiny, hf://..., dir; default: the pipeline's base_model, "
        "or tiny for the demo)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="details: kfp.local's executor output, API client warnings",
    )
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
        check_images()
        path = compile_pipeline(args.output or DEFAULT_PACKAGE, merge_on_gpu=args.merge_on_gpu, params=params)
        shown = f" with defaults {', '.join(f'{k}={v}' for k, v in params.items())}" if params else ""
        print(f"wrote {path}{shown}")
    elif args.run_local:
        try:
            outputs = run_local(
                args.data, args.base, args.output or REPO / "runs" / "local", params, verbose=args.verbose
            )
        except LocalRunFailed as e:
            print(f"pipeline.py --run-local: {e}", file=sys.stderr)
            return 1
        print(json.dumps({k: v for k, v in outputs.items() if k not in ("metrics", "arguments")}, indent=2))
    else:
        if not args.host:
            parser.error("--submit and --schedule need --host URL")
        if args.schedule:
            _cron(args.schedule)  # a bad expression fails before anything else
        check_images()
        if not args.verbose:  # kfp.Client's version warning and urllib3's retry lines: -v shows them
            warnings.filterwarnings("ignore", message="This client only works", category=FutureWarning)
            logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)  # kfp resets "urllib3"
        try:
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
        except Exception as e:  # unreachable host, refused request, auth: one line, not urllib3's frames
            print(
                f"pipeline.py: the KFP API at {args.host} did not take the request: {_api_error(e)}",
                file=sys.stderr,
            )
            return 1
    return 0
