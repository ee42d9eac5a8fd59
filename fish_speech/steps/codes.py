"""The code steps: extract-vq (one shard of the clips) and build-dataset (transcripts + every shard's codes)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from fish_speech.layout import CODEC_FILE
from fish_speech.steps.common import StepError, count_files, cpu_workers, report_metrics, run_command


def extract_vq_step(
    data: str,
    weights: str,
    codes: str,
    shard_index: int,
    num_shards: int,
    batch_size: int,
    precision: str,
) -> dict[str, float]:
    """`fish-speech extract-vq DATA --output-dir CODES ...` for one shard; the report's numbers.

    `data` is only read: the codes go to `codes/<rel>/<stem>.npy`.
    """
    codec = Path(weights) / CODEC_FILE
    if not codec.is_file():
        raise StepError(f"{codec}: the base model has no {CODEC_FILE}")
    with tempfile.TemporaryDirectory(prefix="extract-vq-") as tmp:
        report = Path(tmp) / "report.json"
        argv = ["extract-vq", data, "--output-dir", codes, "--checkpoint-path", codec]
        argv += ["--batch-size", batch_size, "--precision", precision, "--device", "auto"]
        argv += ["--num-workers", cpu_workers(4, reserve=1), "--shard-index", shard_index]
        argv += ["--num-shards", num_shards, "--report", report]
        Path(codes).mkdir(parents=True, exist_ok=True)
        run_command(argv)
        values = report_metrics(report)
    values["codes_files"] = count_files(codes, "*.npy")
    return values


def build_dataset_step(data: str, codes: Sequence[str], protos: str) -> dict[str, float]:
    """`fish-speech build-dataset --input DATA --codes SHARD ... --output PROTOS`; the summary's numbers."""
    files = sum(count_files(shard, "*.npy") for shard in codes)
    if not files:
        raise StepError("extract-vq produced no codes in any shard: nothing to train on")
    with tempfile.TemporaryDirectory(prefix="build-dataset-") as tmp:
        report = Path(tmp) / "report.json"
        argv = ["build-dataset", "--input", data, "--output", protos, "--text-extension", ".lab"]
        for shard in codes:
            argv += ["--codes", shard]
        argv += ["--num-workers", cpu_workers(), "--report", report]
        run_command(argv)
        values = report_metrics(report)
    values["codes_files"] = files
    return values
