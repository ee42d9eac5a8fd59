"""A pipeline run's final status for people: which step failed and why, or what came out and where.

No KFP import (the library stays usable without it): the exit-handler component and `pipeline.py
--run-local` hand in what they know, and this module gathers the rest from

- the KFP API on a cluster (`GET /apis/v2beta1/runs/{id}`: the run's failed tasks with their error
  messages, and its start time), and
- the run folder `kfp.local` writes locally (`<run>/<task>/...`: each finished task's
  `executor_output.json`, training's `summary.json`, the merge's `merge_info.json`, and the
  `failure.json` that `--run-local` writes for a task that failed).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fish_speech.fileio import atomic_write_text
from fish_speech.reports import fmt

log = logging.getLogger(__name__)

FAILURE_FILE = "failure.json"
# In-cluster address of the KFP API server (Kubeflow's standard install); KFP_API_HOST overrides it.
DEFAULT_KFP_API = "http://ml-pipeline.kubeflow.svc.cluster.local:8888"
# Multi-user Kubeflow mounts a service-account token for the pipeline API here (KF_PIPELINES_SA_TOKEN_PATH).
DEFAULT_TOKEN_PATH = "/var/run/secrets/kubeflow/pipelines/token"
_LOCAL_RUN_TIME = re.compile(r"(\d{4}-\d{2}-\d{2}-\d{2}-\d{2}-\d{2})")


# ------------------------------------------------------------------------------------ the KFP API


def ask_kfp_api(run_id: str, host: str | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """The run object of `run_id` from the KFP v2beta1 API (raises OSError/ValueError on failure)."""
    host = (host or os.environ.get("KFP_API_HOST") or DEFAULT_KFP_API).rstrip("/")
    request = urllib.request.Request(f"{host}/apis/v2beta1/runs/{run_id}")
    token_path = Path(os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", DEFAULT_TOKEN_PATH))
    if token_path.is_file():
        request.add_header("Authorization", f"Bearer {token_path.read_text(encoding='utf-8').strip()}")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) host)
        return json.loads(response.read().decode("utf-8"))


def failed_tasks(run: dict[str, Any]) -> list[dict[str, str]]:
    """The failed step tasks of a v2beta1 run object: [{"task", "reason"}], DAG tasks left out.

    A DAG (the exit handler's group, a ParallelFor) fails because a task inside it failed; naming it
    would only hide the step that did.
    """
    tasks = (run.get("run_details") or {}).get("task_details") or []
    out = []
    for task in tasks:
        if task.get("state") != "FAILED" or task.get("child_tasks"):
            continue
        name = task.get("display_name") or task.get("task_id") or "?"
        if name.startswith(("exit-handler", "for-loop", "condition")) or name == run.get("display_name"):
            continue
        error = task.get("error") or {}
        out.append({"task": name, "reason": _one_line(error.get("message") or "")})
    return out


# --------------------------------------------------------------------------------- kfp.local layout


def write_failure(task_dir: str | os.PathLike, task: str, reason: str) -> None:
    """Record why `task` failed, in its kfp.local task folder (read back by `local_run_facts`)."""
    atomic_write_text(
        Path(task_dir) / FAILURE_FILE, json.dumps({"task": task, "reason": _one_line(reason)}) + "\n"
    )


def is_local_run_dir(path: str | os.PathLike) -> bool:
    """True for a kfp.local run folder (its tasks' `executor_output.json` beside each other)."""
    path = Path(path)
    return path.is_dir() and any(path.glob("*/executor_output.json"))


def local_run_facts(run_dir: str | os.PathLike) -> dict[str, Any]:
    """What a kfp.local run folder says: start time, failed tasks, training results, merged checkpoint."""
    run_dir = Path(run_dir)
    facts: dict[str, Any] = {"failed": [], "results": {}}
    match = _LOCAL_RUN_TIME.search(run_dir.name)
    if match:
        started = dt.datetime.strptime(match.group(1), "%Y-%m-%d-%H-%M-%S")
        facts["started_at"] = started.replace(tzinfo=dt.datetime.now().astimezone().tzinfo).timestamp()
    for failure in sorted(run_dir.rglob(FAILURE_FILE)):
        try:
            facts["failed"].append(json.loads(failure.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            facts["failed"].append({"task": failure.parent.name, "reason": ""})
    summary = run_dir / "lora-train" / "lora" / "summary.json"
    merged = run_dir / "merge-lora" / "merged"
    facts["results"] = results_from(summary, merged)
    return facts


def results_from(summary_json: str | os.PathLike, merged_dir: str | os.PathLike) -> dict[str, Any]:
    """Training's headline numbers and the merged checkpoint, from the training and merge outputs."""
    results: dict[str, Any] = {}
    try:
        summary = json.loads(Path(summary_json).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    for key in ("steps", "final_train_loss", "final_val_loss", "best_val_loss", "best_checkpoint"):
        if summary.get(key) is not None:
            results[key] = summary[key]
    try:
        info = json.loads((Path(merged_dir) / "merge_info.json").read_text(encoding="utf-8"))
        results["merged_checkpoint"] = Path(info["lora_weight"]).name
        results["merged_model"] = os.fspath(merged_dir)
    except (OSError, ValueError, KeyError):
        pass
    return results


# ----------------------------------------------------------------------------------------- report


def status_record(
    state: str,
    *,
    run_id: str = "",
    error_message: str = "",
    sources: dict[str, str] | None = None,
    run_dir: str | os.PathLike | None = None,
    api_host: str | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Everything the status report says, gathered from the local run folder or the KFP API."""
    now = dt.datetime.now(dt.timezone.utc).timestamp() if now is None else now
    record: dict[str, Any] = {
        "state": state,
        "run_id": run_id,
        "failed": [],
        "results": {},
        "sources": dict(sources or {}),
        "kfp_error": _one_line(error_message),
        "finished_at": dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "notes": [],
    }
    started = None
    if run_dir is not None and is_local_run_dir(run_dir):
        facts = local_run_facts(run_dir)
        record["failed"], record["results"] = facts["failed"], facts["results"]
        started = facts.get("started_at")
    elif run_id:
        try:
            run = ask_kfp_api(run_id, api_host)
            record["failed"] = failed_tasks(run)
            started = _timestamp(run.get("created_at"))
        except (OSError, ValueError) as e:
            record["notes"].append(f"could not ask the KFP API about run {run_id}: {_one_line(str(e))}")
    if started is not None:
        record["duration_s"] = round(max(0.0, now - started), 1)
    if state != "SUCCEEDED" and not record["failed"]:
        record["notes"].append("no failed step was recorded; see the run's task logs")
    publish = record["sources"].get("publish_destination")
    if publish and state == "SUCCEEDED":
        record["results"]["published_to"] = publish
    return record


def render_status(record: dict[str, Any]) -> str:
    """The status report as Markdown."""
    state = record["state"]
    ok = state == "SUCCEEDED"
    lines = [f"# Run {state}", ""]
    if record.get("duration_s") is not None:
        lines.append(f"Finished {record['finished_at']} after {_duration(record['duration_s'])}.")
    else:
        lines.append(f"Finished {record['finished_at']}.")
    if record["failed"]:
        lines += ["", "## What failed", "", "| step | reason |", "|---|---|"]
        lines += [
            f"| {_md(f['task'])} | {_md(f['reason'] or '(no message recorded)')} |" for f in record["failed"]
        ]
    elif not ok and record.get("kfp_error"):
        lines += ["", f"KFP says: {_md(record['kfp_error'])}"]
    results = record.get("results") or {}
    if results:
        names = {
            "steps": "training steps",
            "final_train_loss": "final train loss",
            "final_val_loss": "final validation loss",
            "best_val_loss": "best validation loss",
            "best_checkpoint": "best checkpoint",
            "merged_checkpoint": "checkpoint merged",
            "merged_model": "merged model (artifact)",
            "published_to": "model published to",
        }
        lines += ["", "## Results", "", "| result | value |", "|---|---|"]
        lines += [f"| {names.get(k, k)} | {_md(fmt(v))} |" for k, v in results.items()]
    if record["sources"]:
        lines += ["", "## Inputs", "", "| input | value |", "|---|---|"]
        lines += [f"| {k} | {_md(str(v))} |" for k, v in record["sources"].items() if v]
    if record.get("run_id"):
        lines += ["", f"Run id: `{record['run_id']}`"]
    for note in record.get("notes", []):
        lines += ["", f"Note: {_md(note)}"]
    return "\n".join(lines) + "\n"


def one_line_summary(record: dict[str, Any]) -> str:
    """`state: step: reason` (or the results) in one line, for logs and the terminal."""
    if record["failed"]:
        return f"{record['state']}: " + "; ".join(f"{f['task']}: {f['reason']}" for f in record["failed"])
    results = record.get("results") or {}
    keys = {"steps": "steps", "best_val_loss": "best validation loss", "merged_checkpoint": "merged"}
    shown = ", ".join(f"{name} {fmt(results[k])}" for k, name in keys.items() if k in results)
    return f"{record['state']}" + (f": {shown}" if shown else "")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _timestamp(value: Any) -> float | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else (f"{minutes} min {secs} s" if minutes else f"{secs} s")


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
