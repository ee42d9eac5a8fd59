"""Multi-node training as a Kubeflow Trainer v2 `TrainJob` (`trainer.kubeflow.org/v1alpha1`).

The lora-train step, given more than one node, builds a TrainJob with the API's own models
(`kubeflow_trainer_api`): a torch runtime by name (`torch-distributed` by default) that starts
`torchrun` on every node with the `PET_*` rendezvous variables set, here running
`fish-speech train ... --resume`. It then watches the TrainJob's conditions, surfaces a failed pod's
reason in one line, gives up after a timeout, and deletes the TrainJob when it is done, failed,
timed out or the step is cancelled (SIGTERM). The name is derived from the step's checkpoint key, so
a retried step finds a TrainJob that is still running and waits for it, or creates a new one that
resumes from the checkpoints on the shared volume.

Every node mounts the workspace PVC at the step's own path (it must be ReadWriteMany): the inputs
are staged there and rank 0 writes the checkpoints there, which the step then collects.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path

log = logging.getLogger(__name__)

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
# The torch runtimes' trainer: a replicated job and container both named "node".
TRAINER_NODE = "node"
PATCH_MANAGER = "fish-speech.kubeflow.org/lora-train"
# JobSet labels every pod of the TrainJob's JobSet (same name) with this
POD_SELECTOR = "jobset.sigs.k8s.io/jobset-name"
# container states that never get better by waiting
STUCK_WAITING = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CrashLoopBackOff"}
)


class TrainJobError(RuntimeError):
    """The TrainJob failed, timed out or was cancelled; the message is one line."""


@dataclass
class TrainJobRequest:
    """What the lora-train step asks Kubeflow Trainer for."""

    name: str
    namespace: str
    image: str
    train_args: list[str]  # after `fish-speech train`
    num_nodes: int
    gpus_per_node: int = 1
    runtime: str = "torch-distributed"
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)
    pvc: str = ""
    mount_path: str = ""
    shm_size: str = "16Gi"
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # ENV -> (secret, key)
    labels: dict[str, str] = field(default_factory=dict)

    def check(self) -> None:
        if self.num_nodes < 1 or self.gpus_per_node < 0:
            raise UserError(
                f"train_nodes {self.num_nodes} / GPUs per node {self.gpus_per_node}: must be ≥ 1 / ≥ 0"
            )
        if bool(self.pvc) != bool(self.mount_path):
            raise UserError("a TrainJob needs both the workspace PVC name and its mount path, or neither")


def trainjob_name(key: str) -> str:
    """A DNS-1035 name from the step's checkpoint key (short: JobSet appends pod suffixes)."""
    clean = "".join(c for c in key.lower() if c.isalnum())[:16]
    return f"fish-speech-train-{clean}"


def trainjob_command() -> list[str]:
    """The container command: torchrun reads nodes, rank and rendezvous from the runtime's PET_* vars."""
    return ["torchrun", "-m", "fish_speech", "train"]


def build_trainjob(req: TrainJobRequest):
    """The TrainJob object (`kubeflow_trainer_api.models.TrainerV1alpha1TrainJob`)."""
    from kubeflow_trainer_api import models as m

    req.check()
    quantity = m.IoK8sApimachineryPkgApiResourceQuantity
    resources = None
    if req.gpus_per_node:
        resources = m.IoK8sApiCoreV1ResourceRequirements(
            limits={req.gpu_resource: quantity(str(req.gpus_per_node))}
        )
    env = [
        m.IoK8sApiCoreV1EnvVar(
            name=name,
            value_from=m.IoK8sApiCoreV1EnvVarSource(
                secret_key_ref=m.IoK8sApiCoreV1SecretKeySelector(name=secret, key=key, optional=True)
            ),
        )
        for name, (secret, key) in sorted(req.secret_env.items())
    ]
    env.append(m.IoK8sApiCoreV1EnvVar(name="PYTHONUNBUFFERED", value="1"))
    trainer = m.TrainerV1alpha1Trainer(
        image=req.image,
        command=trainjob_command(),
        args=list(req.train_args),
        num_nodes=req.num_nodes,
        num_proc_per_node=max(1, req.gpus_per_node),
        resources_per_node=resources,
        env=env,
    )
    # DataLoader workers need more than the container's 64 MiB /dev/shm
    volumes = [
        m.IoK8sApiCoreV1Volume(
            name="dshm",
            empty_dir=m.IoK8sApiCoreV1EmptyDirVolumeSource(
                medium="Memory", size_limit=quantity(req.shm_size)
            ),
        )
    ]
    mounts = [m.IoK8sApiCoreV1VolumeMount(name="dshm", mount_path="/dev/shm")]
    if req.pvc:
        volumes.append(
            m.IoK8sApiCoreV1Volume(
                name="workspace",
                persistent_volume_claim=m.IoK8sApiCoreV1PersistentVolumeClaimVolumeSource(claim_name=req.pvc),
            )
        )
        mounts.append(m.IoK8sApiCoreV1VolumeMount(name="workspace", mount_path=req.mount_path))
    pod_spec = m.TrainerV1alpha1PodSpecPatch(
        node_selector=dict(req.node_selector) or None,
        tolerations=[m.IoK8sApiCoreV1Toleration.from_dict(t) for t in req.tolerations] or None,
        volumes=volumes,
        containers=[m.TrainerV1alpha1ContainerPatch(name=TRAINER_NODE, volume_mounts=mounts)],
        # time for the step in hand's checkpoint after SIGTERM (preemption, deletion)
        termination_grace_period_seconds=120,
    )
    patch = m.TrainerV1alpha1RuntimePatch(
        manager=PATCH_MANAGER,
        training_runtime_spec=m.TrainerV1alpha1TrainingRuntimeSpecPatch(
            template=m.TrainerV1alpha1JobSetTemplatePatch(
                spec=m.TrainerV1alpha1JobSetSpecPatch(
                    replicated_jobs=[
                        m.TrainerV1alpha1ReplicatedJobPatch(
                            name=TRAINER_NODE,
                            template=m.TrainerV1alpha1JobTemplatePatch(
                                spec=m.TrainerV1alpha1JobSpecPatch(
                                    template=m.TrainerV1alpha1PodTemplatePatch(spec=pod_spec)
                                )
                            ),
                        )
                    ]
                )
            )
        ),
    )
    return m.TrainerV1alpha1TrainJob(
        api_version=f"{GROUP}/{VERSION}",
        kind=KIND,
        metadata=m.IoK8sApimachineryPkgApisMetaV1ObjectMeta(
            name=req.name,
            namespace=req.namespace,
            labels={"app.kubernetes.io/part-of": "fish-speech-kfp", **req.labels},
        ),
        spec=m.TrainerV1alpha1TrainJobSpec(
            runtime_ref=m.TrainerV1alpha1RuntimeRef(name=req.runtime),
            trainer=trainer,
            runtime_patches=[patch],
        ),
    )


# ---- state ----


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The TrainJob's condition `kind` (Complete, Failed, ...) when its status is True."""
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind and c.get("status") == "True":
            return c
    return None


def describe(obj: dict[str, Any]) -> str:
    """A short state line: true conditions and child-job counts."""
    status = obj.get("status") or {}
    conds = [c["type"] for c in status.get("conditions") or [] if c.get("status") == "True"]
    jobs = [
        f"{j.get('name')}: {j.get('active', 0)} active, {j.get('ready', 0)} ready, "
        f"{j.get('succeeded', 0)} succeeded, {j.get('failed', 0)} failed"
        for j in status.get("jobsStatus") or []
    ]
    return "; ".join([", ".join(conds) or "no conditions yet", *jobs])


def pod_problem(pod) -> str | None:
    """One line on what is wrong with a pod (a `kubernetes` V1Pod), or None."""
    name = pod.metadata.name
    status = pod.status
    statuses = list(status.init_container_statuses or []) + list(status.container_statuses or [])
    for cs in statuses:
        state = cs.state
        term = state.terminated if state else None
        if term is not None and term.exit_code:
            message = _first_line(term.message)
            return f"pod {name}: container {cs.name} {term.reason or 'failed'} (exit {term.exit_code})" + (
                f": {message}" if message else ""
            )
        waiting = state.waiting if state else None
        if waiting is not None and waiting.reason in STUCK_WAITING:
            message = _first_line(waiting.message)
            return f"pod {name}: container {cs.name} {waiting.reason}" + (f": {message}" if message else "")
    if status.phase == "Failed":
        return f"pod {name}: {status.reason or 'Failed'}" + (
            f": {_first_line(status.message)}" if status.message else ""
        )
    for c in status.conditions or []:
        if c.type == "PodScheduled" and c.status == "False":
            return f"pod {name}: not scheduled ({c.reason}): {_first_line(c.message)}"
    return None


def _first_line(text: str | None, limit: int = 300) -> str:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""  # a traceback's last line says what happened
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---- the cluster ----


class TrainJobRunner:
    """Create, watch and delete one TrainJob with the `kubernetes` client."""

    def __init__(self, api_client, namespace: str, poll_s: float = 10.0) -> None:
        from kubernetes import client

        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.poll_s = poll_s

    # -- API calls --

    def get(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise TrainJobError(f"TrainJob {name}: cannot read it ({e.status} {e.reason})") from None

    def create(self, trainjob) -> None:
        from kubernetes.client.exceptions import ApiException

        name = trainjob.metadata.name
        try:
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, trainjob.to_dict()
            )
        except ApiException as e:
            if e.status == 409:  # created meanwhile (a parallel retry): adopt it
                log.info("TrainJob %s already exists; waiting for it", name)
                return
            hint = " (is Kubeflow Trainer installed? see manifests/)" if e.status == 404 else ""
            raise TrainJobError(f"TrainJob {name}: cannot create it ({e.status} {e.reason}){hint}") from None
        log.info("created TrainJob %s/%s", self.namespace, name)

    def delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, propagation_policy="Background"
            )
            log.info("deleted TrainJob %s/%s", self.namespace, name)
        except ApiException as e:
            if e.status != 404:
                log.warning("TrainJob %s: could not delete it (%s %s)", name, e.status, e.reason)

    def problems(self, name: str) -> list[str]:
        """One line per pod of the TrainJob that failed or cannot start, then the latest warning event."""
        from kubernetes.client.exceptions import ApiException

        found = []
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{POD_SELECTOR}={name}"
            ).items
            found = [p for p in (pod_problem(pod) for pod in pods) if p]
            events = self.core.list_namespaced_event(self.namespace).items
        except ApiException as e:
            return [*found, f"(cannot read pods/events: {e.status} {e.reason})"]
        warnings = [
            ev for ev in events if ev.type == "Warning" and (ev.involved_object.name or "").startswith(name)
        ]
        if warnings:
            ev = max(warnings, key=lambda e: str(e.last_timestamp or e.event_time or ""))
            found.append(
                f"event {ev.reason} on {ev.involved_object.kind} {ev.involved_object.name}: {_first_line(ev.message)}"
            )
        return found

    # -- the whole life --

    def run(
        self, req: TrainJobRequest, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> dict:
        """Create (or adopt) the TrainJob, wait for it, delete it; return its final object.

        Raises TrainJobError (one line) when it fails, times out, or the step gets SIGTERM.
        """
        name = req.name
        existing = self.get(name)
        if existing is not None and condition(existing, "Complete"):
            log.info("TrainJob %s of an earlier attempt has completed", name)
            self.delete(name)
            return existing
        if existing is not None and condition(existing, "Failed"):
            log.info("TrainJob %s of an earlier attempt failed; replacing it (training resumes)", name)
            self.delete(name)
            self._wait_gone(name, clock() + 120)
            existing = None
        if existing is None:
            self.create(build_trainjob(req))
        else:
            log.info("TrainJob %s of an earlier attempt is still running; waiting for it", name)

        cancelled = threading.Event()
        restore = _on_sigterm(cancelled)
        deadline = clock() + timeout_s
        last = ""
        try:
            while True:
                obj = self.get(name)
                if obj is None:
                    raise TrainJobError(f"TrainJob {name}: deleted while the step waited for it")
                state = describe(obj)
                if state != last:
                    log.info("TrainJob %s: %s", name, state)
                    last = state
                if condition(obj, "Complete"):
                    return obj
                failed = condition(obj, "Failed")
                if failed:
                    why = self.problems(name)
                    reason = f"{failed.get('reason', 'Failed')}: {_first_line(failed.get('message'))}"
                    raise TrainJobError(f"TrainJob {name} failed: {why[0] if why else reason}")
                if clock() >= deadline:
                    why = self.problems(name)
                    raise TrainJobError(
                        f"TrainJob {name}: not finished after {timeout_s:g} s ({state})"
                        + (f"; {why[0]}" if why else "")
                    )
                if cancelled.wait(self.poll_s):
                    raise TrainJobError(f"TrainJob {name}: the step was cancelled (SIGTERM)")
        finally:
            restore()
            self.delete(name)

    def _wait_gone(self, name: str, deadline: float) -> None:
        while self.get(name) is not None and time.monotonic() < deadline:
            time.sleep(min(self.poll_s, 2.0))


def _on_sigterm(event: threading.Event) -> Callable[[], None]:
    """Turn SIGTERM (KFP cancelling the step) into `event`; returns the undo. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda signum, frame: event.set())
    return lambda: signal.signal(signal.SIGTERM, previous)


def kube_api_client(host: str | None = None):
    """A `kubernetes` ApiClient: in-cluster config (the step's service account), else ~/.kube/config."""
    from kubernetes import client, config

    if host:
        return client.ApiClient(client.Configuration(host=host))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def current_namespace(default: str = "kubeflow") -> str:
    """The namespace the step's pod runs in (the service-account mount), else `default`."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    try:
        return path.read_text().strip() or default
    except OSError:
        return os.environ.get("POD_NAMESPACE", default)


# ---- inputs on the shared volume ----


def stage_tree(src: str | os.PathLike, dst: str | os.PathLike, exclude: tuple[str, ...] = ()) -> Path:
    """Copy `src` to `dst` on the shared volume (hard links where possible); files already there
    with the same size are kept, so a retried step copies nothing twice. `exclude`: top-level names."""
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] in exclude or path.name.startswith(".tmp-"):
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if target.is_file() and target.stat().st_size == path.stat().st_size:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            tmp = target.with_name(f".tmp-{target.name}.link")
            tmp.unlink(missing_ok=True)
            os.link(path, tmp)
            os.replace(tmp, target)
        except OSError:
            with atomic_path(target) as tmp_path:
                shutil.copyfile(path, tmp_path)
    return dst


def stage_inputs(
    results: str | os.PathLike,
    protos: str | os.PathLike,
    base: str | os.PathLike,
    pvc: str,
    mount_path: str,
    num_nodes: int,
) -> tuple[Path, Path]:
    """Copy protos and base weights beside the checkpoint folder `results` on the workspace PVC, where
    every node of the TrainJob sees them; return their staged folders (protos, base)."""
    results = Path(results)
    mount = Path(mount_path) if mount_path else None
    if not pvc or mount is None or not results.resolve().is_relative_to(mount.resolve()):
        raise UserError(
            f"train_nodes {num_nodes}: the checkpoint folder {results} must be on the workspace PVC "
            f"({pvc or 'none given'} at {mount_path or '?'}), which every node mounts (ReadWriteMany); "
            "object-store checkpoint roots work with train_nodes 1 only"
        )
    inputs = results.parent / f"{results.name}.inputs"
    # codec.pth (1.9 GB) is not read by training; merge-lora takes it from the base model artifact
    staged_base = stage_tree(base, inputs / "base", exclude=("codec.pth",))
    staged_protos = stage_tree(protos, inputs / "protos")
    results.mkdir(parents=True, exist_ok=True)
    return staged_protos, staged_base


def train_on_trainjob(
    train_argv: list[str],
    *,
    key: str,
    num_nodes: int,
    gpus_per_node: int,
    image: str,
    runtime: str = "torch-distributed",
    gpu_resource: str = "nvidia.com/gpu",
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    pvc: str = "",
    mount_path: str = "",
    timeout_s: float = 72 * 3600,
    api_client=None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Run `fish-speech train <train_argv>` (paths on the PVC, see `stage_inputs`) as a TrainJob of
    `num_nodes` × `gpus_per_node`; return its final object once it completed."""
    req = TrainJobRequest(
        name=trainjob_name(key),
        namespace=namespace or current_namespace(),
        image=image,
        train_args=list(train_argv),
        num_nodes=num_nodes,
        gpus_per_node=gpus_per_node,
        runtime=runtime,
        gpu_resource=gpu_resource,
        node_selector=dict(node_selector or {}),
        tolerations=list(tolerations or []),
        pvc=pvc,
        mount_path=mount_path,
        labels={"fish-speech.kubeflow.org/checkpoint-key": key[:63]},
    )
    log.info(
        "training on %d node(s) × %d GPU(s) as TrainJob %s/%s",
        num_nodes,
        gpus_per_node,
        req.namespace,
        req.name,
    )
    runner = TrainJobRunner(api_client or kube_api_client(), req.namespace)
    return runner.run(req, timeout_s)
