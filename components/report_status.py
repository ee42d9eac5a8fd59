"""report-status: the exit handler; records the run's final status as Markdown and one JSON log line."""

from kfp import dsl
from kfp.dsl import Markdown, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def report_status(
    status: dsl.PipelineTaskFinalStatus,
    data_source: str,
    base_model: str,
    publish_destination: str,
    report: Output[Markdown],
):
    """Runs last, whether the pipeline succeeded, failed or was cancelled."""
    import json
    import time

    record = {
        "state": status.state,
        "pipeline_job": status.pipeline_job_resource_name,
        "task": status.pipeline_task_name,
        "error_code": status.error_code,
        "error_message": status.error_message,
        "data_source": data_source,
        "base_model": base_model,
        "publish_destination": publish_destination,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print("fish-speech pipeline status: " + json.dumps(record, sort_keys=True))
    lines = [f"# Run {record['state']}", "", "| field | value |", "|---|---|"]
    lines += [f"| {k} | {str(v).replace('|', '/')} |" for k, v in record.items() if v not in (None, "")]
    with open(report.path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
