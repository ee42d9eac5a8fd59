import json

import pytest

from fish_speech.errors import UserError
from fish_speech.reports import read_report_numbers, report_numbers, write_reports


def test_report_numbers_flattens_one_level_and_leaves_out_inputs():
    report = {
        "clips": 16,
        "ok": True,
        "summary": {"minutes": 0.6, "deep": {"x": 1}},
        "skipped": {"silent": 2},
        "options": {"max_seconds": 190},
        "files": [1, 2],
        "name": "demo",
    }
    assert report_numbers(report) == {"clips": 16, "ok": 1, "minutes": 0.6, "skipped.silent": 2}


def test_write_and_read_reports(tmp_path):
    target = tmp_path / "r" / "report.json"
    write_reports([(target, lambda: json.dumps({"a": 1.5})), (None, lambda: "never rendered")])
    assert read_report_numbers(target) == {"a": 1.5}
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="cannot write report"):
        write_reports([(blocker / "x.json", lambda: "{}")])
