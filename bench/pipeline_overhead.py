"""Benchmark: what the Kubeflow layer costs. The whole DAG under `kfp.local` vs the same steps called directly.

Ours: `python pipeline.py --run-local` on the demo voice with tiny models (the `make demo` run).
Baseline: the same `fish-speech` commands, with the same settings, run one after the other as plain
subprocesses (fetch-weights tiny, validate, normalize, extract-vq in 2 shards, build-dataset, train,
merge-lora; the two extract-vq shards in parallel, as in the pipeline). The difference, divided by the
number of tasks, is the per-task overhead of the pipeline layer (task subprocess start-up, artifact copies,
content hash and mirror, metrics, exit handler). It can come out negative: the DAG also overlaps
independent branches (fetch-weights runs beside validate and normalize), which the baseline does not.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Row, report

DEMO = REPO / "examples" / "demo-voice"
PIPELINE_TASKS = (
    12  # content-hash, fetch-data, fetch-weights, validate, normalize, plan-shards, 2 x extract-vq,
)
# build-dataset, lora-train, merge-lora, publish (+ the exit handler, counted with publish)


def _run(args: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(args, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def direct_steps(work: Path) -> tuple[float, dict[str, float]]:
    """The pipeline's steps as plain commands; returns total wall time and each step's."""
    fs = [sys.executable, "-m", "fish_speech"]
    data, norm = work / "data", work / "normalized"
    subprocess.run(["cp", "-r", str(DEMO), str(data)], check=True)
    steps = {
        "fetch-weights": [*fs, "fetch-weights", "tiny", "--output", str(work / "base")],
        "validate": [
            *fs,
            "validate",
            str(data),
            "--report",
            str(work / "r.md"),
            "--json",
            str(work / "r.json"),
        ],
        "normalize": [*fs, "normalize", str(data), str(norm)],
        "extract-vq 0/2": [
            *fs,
            "extract-vq",
            str(norm),
            "--checkpoint-path",
            str(work / "base" / "codec.pth"),
            "--batch-size",
            "4",
            "--shard-index",
            "0",
            "--num-shards",
            "2",
        ],
        "extract-vq 1/2": [
            *fs,
            "extract-vq",
            str(norm),
            "--checkpoint-path",
            str(work / "base" / "codec.pth"),
            "--batch-size",
            "4",
            "--shard-index",
            "1",
            "--num-shards",
            "2",
        ],
        "build-dataset": [*fs, "build-dataset", "--input", str(norm), "--output", str(work / "protos")],
        "train": [
            *fs,
            "train",
            "--data",
            str(work / "protos"),
            "--base-weight",
            str(work / "base"),
            "--output",
            str(work / "results"),
            "--max-steps",
            "4",
            "--save-every",
            "2",
            "--batch-size",
            "2",
        ],
        "merge-lora": [
            *fs,
            "merge-lora",
            "--base-weight",
            str(work / "base"),
            "--lora-weight",
            "last",
            "--train-output",
            str(work / "results"),
            "--output",
            str(work / "merged"),
        ],
    }
    times = {}
    for name, args in steps.items():
        if name == "extract-vq 1/2":
            continue
        if name == "extract-vq 0/2":  # the pipeline runs the shards in parallel: so does the baseline
            started = time.perf_counter()
            procs = [
                subprocess.Popen(a, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for a in (args, steps["extract-vq 1/2"])
            ]
            if any(p.wait() for p in procs):
                raise RuntimeError("extract-vq failed")
            times["extract-vq, 2 shards in parallel"] = time.perf_counter() - started
            continue
        times[name] = _run(args, work)
    return sum(times.values()), times


def pipeline_run(work: Path) -> float:
    return _run(
        [
            sys.executable,
            str(REPO / "pipeline.py"),
            "--run-local",
            "--data",
            str(DEMO),
            "--base",
            "tiny",
            "--output",
            str(work / "run"),
        ],
        REPO,
    )


def main(quick: bool = False) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        work = Path(tmp)
        (work / "direct").mkdir()
        direct, steps = direct_steps(work / "direct")
        ours = pipeline_run(work)
    per_task = (ours - direct) / PIPELINE_TASKS
    rows = [
        Row(
            "demo DAG: kfp.local run vs the same steps as plain commands",
            ours,
            direct,
            "s",
            "tiny models, demo voice (16 clips), train 4 steps",
        ),
        Row(
            "pipeline overhead per task",
            per_task,
            None,
            "s",
            f"({ours:.1f} - {direct:.1f}) / {PIPELINE_TASKS} tasks",
        ),
    ]
    rows += [Row(f"  direct step: {name}", t, None, "s") for name, t in steps.items()]
    return rows


if __name__ == "__main__":
    report("pipeline_overhead", main())
