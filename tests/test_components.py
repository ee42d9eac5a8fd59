"""Components run one at a time under kfp.local: their checks and error messages.

The whole DAG on the demo voice is tests/test_pipeline_local.py; content caching is
tests/test_pipeline_cache.py.
"""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _local(tmp_path: Path) -> Path:
    import warnings

    from kfp import local

    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


def test_plan_shards(tmp_path):
    import components as c

    _local(tmp_path)
    assert [int(i) for i in c.plan_shards(num_shards=3).output] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        c.plan_shards(num_shards=0)


def test_fetch_weights_rejects_a_revision_off_the_hub(tmp_path):
    import components as c

    _local(tmp_path)
    with pytest.raises(RuntimeError):
        c.fetch_weights(source="s3://bucket/model", revision="abc123")
