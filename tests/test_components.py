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


def test_exit_handler_records_a_failure(tmp_path):
    """report-status runs after a failed step and records FAILED with the error."""
    import builtins

    from kfp import dsl

    import components as c

    @dsl.pipeline(name="status")
    def failing(source: str):
        status = c.report_status(
            run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            data_source=source,
            base_model="tiny",
            publish_destination="",
        )
        with dsl.ExitHandler(status):
            c.plan_shards(num_shards=0)

    root = _local(tmp_path)
    real_print = builtins.print  # kfp.local may leave its indenting print() behind
    try:
        with pytest.raises(RuntimeError, match="FAILURE"):
            failing(source="s3://clips/x")
    finally:
        builtins.print = real_print
    (report,) = root.glob("status-*/report-status/report")
    text = report.read_text()
    assert text.startswith("# Run FAILED")
    assert "| data_source | s3://clips/x |" in text
    # no failure.json (only --run-local's log writes one): the report says where to look
    assert "no failed step was recorded" in text
