#!/usr/bin/env python3
"""Run one component of a compiled pipeline the way KFP's launcher runs it, inside its image.

    python replay_component.py PIPELINE.yaml TASK SCRATCH_URI [NAME=VALUE ...]

Reads the task's executor (`deploymentSpec.executors`) from the compiled YAML, builds the executor input
the launcher would hand it (the given parameters; each output artifact at SCRATCH_URI/TASK/NAME, e.g.
`minio://mlpipeline/smoke` which the KFP executor maps to /minio/mlpipeline/smoke), substitutes it for
`{{$}}` in the container's args and runs `command + args` unchanged. Prints one JSON line: the exit code,
the local path of each output artifact and the files in it, and the executor's output metadata.
images/smoke.sh uses it; it needs PyYAML (a kfp dependency).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

LOCAL_PREFIXES = {"minio://": "/minio/", "s3://": "/s3/", "gs://": "/gcs/"}
OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"


def local_path(uri: str) -> str:
    """The path the KFP executor reads and writes for an artifact URI."""
    for prefix, mount in LOCAL_PREFIXES.items():
        if uri.startswith(prefix):
            return mount + uri[len(prefix) :]
    raise ValueError(f"{uri}: not a minio://, s3:// or gs:// URI")


def find_task(spec: dict, task: str) -> str:
    """The component name of `task`, searched in the root DAG and every sub-DAG (exit handlers, conditions)."""
    dags = [spec["root"], *spec["components"].values()]
    for dag in dags:
        found = dag.get("dag", {}).get("tasks", {}).get(task)
        if found:
            return found["componentRef"]["name"]
    raise SystemExit(f"replay: the pipeline has no task {task!r}")


def executor_input(spec: dict, task: str, scratch: str, params: dict[str, str]) -> tuple[dict, dict]:
    """(container spec, executor input) for `task` of the compiled pipeline `spec`."""
    comp_name = find_task(spec, task)
    component = spec["components"][comp_name]
    container = spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
    declared = component.get("inputDefinitions", {}).get("parameters", {})
    unknown = set(params) - set(declared)
    if unknown:
        raise SystemExit(f"replay: {task} has no parameter(s) {', '.join(sorted(unknown))}")
    values = {}
    for name, decl in declared.items():
        if name in params:
            kind = decl.get("parameterType", "STRING")
            values[name] = params[name] if kind == "STRING" else json.loads(params[name])
        elif "defaultValue" in decl:
            values[name] = decl["defaultValue"]
        elif not decl.get("isOptional"):
            raise SystemExit(f"replay: {task} needs parameter {name}")
    artifacts = {}
    for name, decl in component.get("outputDefinitions", {}).get("artifacts", {}).items():
        artifacts[name] = {
            "artifacts": [
                {
                    "name": name,
                    "type": {"schemaTitle": decl["artifactType"]["schemaTitle"]},
                    "uri": f"{scratch.rstrip('/')}/{task}/{name}",
                    "metadata": {},
                }
            ]
        }
    outputs = {"artifacts": artifacts, "outputFile": OUTPUT_FILE}
    out_params = component.get("outputDefinitions", {}).get("parameters", {})
    if out_params:
        outputs["parameters"] = {n: {"outputFile": f"/tmp/kfp_outputs/{n}"} for n in out_params}
    return container, {"inputs": {"parameterValues": values}, "outputs": outputs}


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.exit(__doc__)
    spec_path, task, scratch, *pairs = argv
    params = dict(p.split("=", 1) for p in pairs)
    spec = next(d for d in yaml.safe_load_all(Path(spec_path).read_text()) if d and "deploymentSpec" in d)
    container, exec_input = executor_input(spec, task, scratch, params)
    args = [json.dumps(exec_input) if a == "{{$}}" else a for a in container.get("args", [])]
    Path(OUTPUT_FILE).parent.mkdir(parents=True, exist_ok=True)
    rc = subprocess.run([*container["command"], *args]).returncode
    report = {"task": task, "image": container["image"], "rc": rc, "artifacts": {}}
    for name, art in exec_input["outputs"]["artifacts"].items():
        path = Path(local_path(art["artifacts"][0]["uri"]))
        files = (
            sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        )
        report["artifacts"][name] = {"path": str(path), "files": files, "is_file": path.is_file()}
    if Path(OUTPUT_FILE).is_file():
        report["output_metadata"] = json.loads(Path(OUTPUT_FILE).read_text())
    print(json.dumps(report))
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
