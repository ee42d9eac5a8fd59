"""report-status: the exit handler; the run's final status as Markdown and one JSON log line.

It names the step that failed and its one-line reason (on a cluster from the KFP API's record of the
run's failed tasks, under kfp.local from the run folder), or the training results, the checkpoint
merged and where the model went.
"""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report_status(
    status: dsl.PipelineTaskFinalStatus,
    run_id: str,
    data_source: str,
    base_model: str,
    publish_destination: str,
    report: Output[Markdown],
):
    """Runs last, whether the pipeline succeeded, failed or was cancelled."""
    import json
    from pathlib import Path

    from fish_speech.fileio import atomic_write_text
    from fish_speech.status import one_line_summary, render_status, status_record

    record = status_record(
        status.state,
        run_id=run_id,
        error_message=status.error_message or "",
        sources={
            "data_source": data_source,
            "base_model": base_model,
            "publish_destination": publish_destination,
        },
        run_dir=Path(report.path).parent.parent,  # kfp.local: <run>/report-status/report
    )
    print("fish-speech pipeline status: " + one_line_summary(record))
    print("fish-speech pipeline status record: " + json.dumps(record, sort_keys=True))
    atomic_write_text(report.path, render_status(record))
