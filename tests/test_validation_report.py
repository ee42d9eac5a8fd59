"""The validation report a speech engineer reads: source, transcripts, chars/s outliers, warnings, durations."""

from __future__ import annotations

import json
from pathlib import Path

from fish_speech.cli import main

SENTENCE = "the quick brown fox jumps over the lazy dog again and again "  # 60 chars


def _text(seconds: float, rate: float = 15.0) -> str:
    n = int(seconds * rate)
    return (SENTENCE * (n // len(SENTENCE) + 1))[:n].strip()


def _data(root: Path, write_clip) -> Path:
    """anna: 6 clips at ~15 chars/s, one with a transcript 4x too long; ben: one 2 s clip; one top-level clip."""
    for i, seconds in enumerate((2.0, 2.5, 3.0, 3.5, 4.0, 4.5)):
        rate = 60.0 if i == 3 else 15.0
        write_clip(root / "anna" / f"a{i}.wav", seconds=seconds, text=_text(seconds, rate), seed=i)
    write_clip(root / "ben" / "b0.wav", seconds=2.0, text=_text(2.0), seed=9)
    write_clip(root / "loose.wav", seconds=1.5, text=_text(1.5), seed=11)
    return root


def test_report_flags_rate_outliers_low_audio_speakers_and_top_level_clips(tmp_path, write_clip, monkeypatch):
    import fish_speech.dataset.validate as validate

    monkeypatch.setattr(validate, "LOW_SPEAKER_MINUTES", 0.25)  # 15 s: anna has 19.5 s, ben 2 s
    report = validate.validate_dir(_data(tmp_path / "data", write_clip), progress=False)
    data = report.to_dict()
    flagged = [c["path"] for c in data["clips"] if c["rate_outlier"]]
    assert flagged == ["anna/a3.wav"]
    rates = {c["path"]: c["chars_per_second"] for c in data["clips"]}
    assert 13 < rates["anna/a0.wav"] < 16 and rates["anna/a3.wav"] > 50
    assert data["clips"][0]["text"].startswith("the quick brown fox")
    warnings = " ".join(data["warnings"])
    assert "speaker `ben`: only 2 s of usable audio" in warnings
    assert "speaker `anna`" not in warnings
    assert "speaker `.`" in warnings and "subfolder" in warnings
    histogram = {row["bin"]: row["clips"] for row in data["duration_histogram"]}
    assert sum(histogram.values()) == 8
    assert histogram["1–2 s"] == 1 and histogram["2–5 s"] == 7
    assert list(histogram) == ["1–2 s", "2–5 s"]  # no empty bins outside the clips' range

    md = report.to_markdown()
    assert "## Warnings" in md and "## Durations of the usable clips" in md
    row = next(line for line in md.splitlines() if line.startswith("| anna/a3.wav"))
    assert "⚠" in row and "check the transcript" in row
    assert "| the quick brown fox" in md


def test_report_names_the_source_not_the_artifact_path(tmp_path, write_clip, capsys):
    data = _data(tmp_path / "artifact" / "fetch-data" / "data", write_clip)
    md, js = tmp_path / "r.md", tmp_path / "r.json"
    rc = main(["validate", str(data), "--source", "s3://clips/anna", "--report", str(md), "--json", str(js)])
    assert rc == 0
    text = md.read_text(encoding="utf-8")
    assert "`s3://clips/anna`" in text and "fetch-data" not in text
    assert json.loads(js.read_text())["source"] == "s3://clips/anna"
