"""Kubeflow Pipelines components: one per step, each a thin wrapper over one `fish-speech` command.

Every component is a lightweight `@dsl.component` whose `base_image` is the step's image (CPU or GPU,
see components/images.py) with `fish_speech` and kfp pre-installed (`install_kfp_package=False`: nothing
is pip-installed at run time), so a cluster and `kfp.local` run the same code. Each imports
`fish_speech` inside its body, because KFP ships only the function's source to the container.
Component modules do not use `from __future__ import annotations`: KFP reads the annotation objects.
"""

from components.build_dataset import build_dataset
from components.evaluate import evaluate, publish_skipped
from components.extract_vq import extract_vq, plan_shards
from components.fetch_data import content_hash, fetch_data
from components.fetch_weights import fetch_weights
from components.images import CPU_IMAGE, GPU_IMAGE
from components.lora_train import lora_train
from components.merge_lora import merge_lora
from components.normalize import normalize
from components.publish import publish
from components.report_status import report_status
from components.validate import validate

__all__ = [
    "CPU_IMAGE",
    "GPU_IMAGE",
    "build_dataset",
    "content_hash",
    "evaluate",
    "extract_vq",
    "fetch_data",
    "fetch_weights",
    "lora_train",
    "merge_lora",
    "normalize",
    "plan_shards",
    "publish",
    "publish_skipped",
    "report_status",
    "validate",
]
