"""The lora-train step: resume folder, object-store checkpoint sync, results and the loss-curve page.

Checkpoints go to a folder keyed on everything that decides the trained weights (`checkpoint_key`:
every `TrainOptions` field not marked `identity=False`, plus the identities of the inputs), so a retried
(preempted) task, or a rerun on the same data and settings, resumes from the newest complete
checkpoint, and a run with any other setting starts its own folder. `checkpoint_root` is a folder (on
the workspace PVC), an object-store prefix (pulled at start, uploaded every `sync_seconds` and at the
end), or empty: train straight into the output folder (no resume across pods). With a `TrainJobPlan`
of more than one node, this pod trains nothing itself: the inputs are staged on the workspace PVC and
a Kubeflow Trainer TrainJob (`fish_speech/kube/trainjob.py`) trains into the checkpoint folder there.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from fish_speech.fileio import atomic_write_text, is_temp_file
from fish_speech.options import identity_fields, options_to_argv
from fish_speech.reports import report_numbers
from fish_speech.steps.common import StepError, run_command
from fish_speech.text2semantic.options import TrainOptions
from fish_speech.text2semantic.training.checkpoints import CHECKPOINT_DIR
from fish_speech.text2semantic.training.metrics import loss_report_html

log = logging.getLogger(__name__)

SYNC_SECONDS = 300  # object-store uploads while training: a preempted pod loses at most this much


def checkpoint_key(opts: TrainOptions, inputs: dict[str, str]) -> str:
    """16 hex digits naming the resume folder of a run with `opts` on `inputs` (name -> identity)."""
    settings = {name: getattr(opts, name) for name in identity_fields(TrainOptions)}
    payload = json.dumps({"inputs": inputs, "options": settings}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class CheckpointSync:
    """While the block runs, upload `folder` to the object-store `remote` every `seconds`; once more at the end.

    The uploads go through `fish_speech.storage.publish`, which skips files already there, so each
    upload sends only the new checkpoints. A failed periodic upload is logged and retried next time;
    the final one raises.
    """

    def __init__(self, folder: Path, remote: str, seconds: float = SYNC_SECONDS) -> None:
        self.folder, self.remote, self.seconds = folder, remote, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)
        self._lock = threading.Lock()

    def upload(self) -> None:
        from fish_speech.storage.publish import publish_dir
        from fish_speech.storage.uri import parse_uri

        if not (self.folder / CHECKPOINT_DIR).is_dir():
            return
        with self._lock:  # the final upload waits for a periodic one in flight
            publish_dir(self.folder, parse_uri(self.remote), message="lora-train checkpoints")

    def pull(self) -> bool:
        """Download what an earlier attempt uploaded; False when there is nothing yet."""
        from fish_speech.storage.base import EmptyPrefixError
        from fish_speech.storage.fetch import fetch_tree, open_store
        from fish_speech.storage.uri import parse_uri

        uri = parse_uri(self.remote)
        try:
            fetch_tree(open_store(uri), self.folder, source=uri.ident)
        except EmptyPrefixError:
            return False
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.seconds):
            try:
                self.upload()
            except Exception as e:  # the network may be down for a while; the next interval retries
                log.warning(
                    "could not upload checkpoints to %s (%s); retrying in %d s", self.remote, e, self.seconds
                )

    def __enter__(self) -> CheckpointSync:
        self._thread.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        self._thread.join()
        if exc_type is None:
            self.upload()


@dataclasses.dataclass
class TrainJobPlan:
    """Where and how the step trains when it runs a TrainJob (`num_nodes` > 1)."""

    num_nodes: int = 1
    gpus_per_node: int = 1
    gpu_resource: str = "nvidia.com/gpu"
    image: str = ""
    runtime: str = "torch-distributed"
    timeout_hours: float = 72.0
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    pvc: str = ""
    mount_path: str = ""


def lora_train_step(
    protos: str,
    base_model: str,
    output: str,
    checkpoint_root: str = "",
    inputs: dict[str, str] | None = None,
    loss_html: str | None = None,
    sync_seconds: float = SYNC_SECONDS,
    trainjob: TrainJobPlan | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Train (resuming where an earlier attempt stopped) and leave the results in `output`.

    `options`: `TrainOptions` fields (lora_config, max_steps, ...). `inputs`: the identities of the
    inputs for the resume key (default: the paths). Writes the loss-curve page to `loss_html` when
    given. `trainjob` with `num_nodes` > 1: train as a TrainJob of that many nodes (see module doc).
    Returns {"metrics", "checkpoints", "checkpoint_folder"}.
    """
    from fish_speech.storage.uri import is_object_store

    opts = TrainOptions(data=[protos], base_weight=base_model, output=output, resume=True, **options)
    opts.check()
    identities = dict(inputs or {"protos": protos, "base_model": base_model})
    multi = trainjob is not None and trainjob.num_nodes > 1
    if multi:  # another world size is another global batch, hence another run
        identities["train_nodes"] = str(trainjob.num_nodes)
    key = checkpoint_key(opts, identities)
    out = Path(output)
    sync = None
    if is_object_store(checkpoint_root):
        # train in a local folder, pull what an earlier attempt uploaded, upload new checkpoints as they come
        sync = CheckpointSync(
            Path(tempfile.mkdtemp(prefix="lora-train-")),
            f"{checkpoint_root.rstrip('/')}/lora-train/{key}",
            sync_seconds,
        )
        if not sync.pull():
            log.info("nothing to resume at %s: training from the start", sync.remote)
        results = sync.folder
    elif checkpoint_root:
        results = Path(checkpoint_root) / "lora-train" / key
    else:
        results = out
    opts = dataclasses.replace(opts, output=str(results))
    print(f"training in {results}" + (f" (checkpoints synced to {sync.remote})" if sync else ""))
    if multi:
        _train_on_trainjob(opts, results, key, trainjob)
    elif sync:
        with sync:
            run_command(["train", *options_to_argv(TrainOptions, opts)])
    else:
        run_command(["train", *options_to_argv(TrainOptions, opts)])

    if results != out:
        _copy_results(results, out)
    if sync:
        shutil.rmtree(results, ignore_errors=True)  # the local working copy; the prefix keeps them
    checkpoints = sorted((out / CHECKPOINT_DIR).glob("step_*.ckpt"))
    if not checkpoints:
        raise StepError(f"{results}/{CHECKPOINT_DIR} holds no step_*.ckpt after training")
    metrics = _train_metrics(out)
    metrics["checkpoints"] = len(checkpoints)
    if loss_html:
        atomic_write_text(loss_html, loss_report_html(out, f"LoRA training: {opts.lora_config}"))
    return {
        "metrics": metrics,
        "checkpoints": [p.name for p in checkpoints],
        "checkpoint_folder": sync.remote if sync else str(results),
    }


def _train_on_trainjob(opts: TrainOptions, results: Path, key: str, plan: TrainJobPlan) -> None:
    from fish_speech.kube.trainjob import stage_inputs, train_on_trainjob

    protos, base = stage_inputs(
        results, opts.data[0], opts.base_weight, plan.pvc, plan.mount_path, plan.num_nodes
    )
    staged = dataclasses.replace(opts, data=[str(protos)], base_weight=str(base))
    train_on_trainjob(
        options_to_argv(TrainOptions, staged),
        key=key,
        num_nodes=plan.num_nodes,
        gpus_per_node=plan.gpus_per_node,
        image=plan.image,
        runtime=plan.runtime,
        gpu_resource=plan.gpu_resource,
        node_selector=plan.node_selector,
        tolerations=plan.tolerations,
        pvc=plan.pvc,
        mount_path=plan.mount_path,
        timeout_s=plan.timeout_hours * 3600,
    )


def _copy_results(results: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for item in sorted(results.iterdir()):
        if is_temp_file(item):
            continue
        if item.is_dir():
            shutil.copytree(item, out / item.name, dirs_exist_ok=True)
        else:
            shutil.copy2(item, out / item.name)


def _train_metrics(out: Path) -> dict[str, float]:
    """The numbers of the run's summary.json (or metrics.json, if there is no summary)."""
    for name in ("summary.json", "metrics.json"):
        if (out / name).is_file():
            values = json.loads((out / name).read_text(encoding="utf-8"))
            return report_numbers(values) if isinstance(values, dict) else {}
    return {}
