"""eval.json / eval.csv / report.html from planted scores: parses, every player decodes, size bounded."""

import base64
import csv
import io
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import soundfile as sf

from fish_speech.evaluate import report
from fish_speech.evaluate.report import REAL, write_outputs


def _result(n_utts=3, names=("real", "base", "step_000000002", "step_000000004")):
    steps = {"real": None, "base": None, "step_000000002": 2, "step_000000004": 4}
    cands = [
        {
            "name": n,
            "step": steps[n],
            "similarity": 0.5 + 0.1 * i,
            "cer": 0.3 - 0.05 * i,
            "wer": 0.4,
            "duration_ratio": 1.0,
            "utterances": n_utts,
            "failures": 0,
            "val_loss": 2.0 - i if steps[n] else None,
        }
        for i, n in enumerate(names)
    ]
    utts = []
    for u in range(n_utts):
        scores = {
            n: {
                "cer": 0.1,
                "wer": 0.2,
                "similarity": 0.7,
                "seconds": 1.5,
                "duration_ratio": 1.1,
                "transcript": f"heard <{u}> & more",
                "failed": n == "step_000000002" and u == 0,
            }
            for n in names
        }
        utts.append(
            {
                "id": f"u{u + 1:02d}",
                "speaker": "anna" if u % 2 == 0 else "ben",
                "text": f"Sentence <b>{u}</b> “quoted”",
                "seen_in_training": u == 2,
                "scores": scores,
            }
        )
    return {
        "candidates": cands,
        "utterances": utts,
        "speakers": {
            "anna": {n: {"similarity": 0.6, "cer": 0.1} for n in names},
            "ben": {n: {"similarity": 0.5, "cer": 0.2} for n in names},
        },
        "choice": {
            "chosen": "step_000000004",
            "reason": "earliest within margins",
            "beats_base": True,
            "beats_base_reason": "similarity up",
            "flags": [],
            "similarity_margin": 0.02,
            "cer_margin": 0.02,
        },
        "validation_loss": [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 1.2}],
        "options": {"asr": "tiny", "speaker_model": "tiny", "seed": 42},
        "notes": [],
    }


def _audio(result, seconds=1.5, sr=44100):
    rng = np.random.default_rng(0)
    out = {}
    for utt in result["utterances"]:
        for name, s in utt["scores"].items():
            n = 0 if s["failed"] else int(seconds * sr)
            out[(utt["id"], name)] = ((0.1 * rng.standard_normal(n)).astype(np.float32), sr)
    return out


class _Players(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources, self.images, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "audio":
            self.sources.append(a["src"])
        if tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):
        self.text.append(data)


def test_outputs_parse_and_every_player_decodes(tmp_path):
    result = _result()
    paths = write_outputs(tmp_path, result, _audio(result))
    page = paths["html"].read_text(encoding="utf-8")
    parser = _Players()
    parser.feed(page)
    # one player per sentence and candidate (real, base, 2 checkpoints), all embedded
    assert len(parser.sources) == 3 * 4
    for src in parser.sources:
        assert src.startswith("data:audio/mpeg;base64,")
        data, sr = sf.read(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        assert sr == report.PREVIEW_SAMPLE_RATE and len(data) > 0
    durations = sorted(
        len(sf.read(io.BytesIO(base64.b64decode(s.split(",", 1)[1])))[0]) / report.PREVIEW_SAMPLE_RATE
        for s in parser.sources
    )
    assert durations[0] == pytest.approx(0.1, abs=0.06)  # the failed candidate: a short silence
    assert durations[-1] == pytest.approx(1.5, abs=0.06)
    png = base64.b64decode(parser.images[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    text = " ".join(parser.text)
    assert "Sentence <b>0</b>" in text  # user text escaped, shown as text
    assert "Chosen: step_000000004" in text and "seen in training" in text and "no audio" in text
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")  # nothing fetched
    assert len(page) < 500_000

    loaded = json.loads(paths["json"].read_text())
    assert loaded["choice"]["chosen"] == "step_000000004" and loaded["players_shown"] == 3
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 3 * 4 + 4
    assert rows[0]["transcript"] == "heard <0> & more"
    assert [r["candidate"] for r in rows if r["utterance"] == "ALL"] == [
        REAL,
        "base",
        "step_000000002",
        "step_000000004",
    ]
    assert not list(tmp_path.glob(".tmp-*"))


def test_page_size_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "MAX_HTML_BYTES", 600_000)
    result = _result(n_utts=6)
    paths = write_outputs(tmp_path, result, _audio(result, seconds=8.0))
    page = paths["html"].read_text(encoding="utf-8")
    assert len(page.encode()) < 600_000
    shown = json.loads(paths["json"].read_text())["players_shown"]
    assert 0 < shown < 6
    assert len(re.findall("<audio", page)) == shown * 4
    assert "left out to keep the page under" in page


def _chromium():
    import shutil

    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium is not installed (apt-get install chromium)")
def test_every_player_decodes_in_chromium(tmp_path):
    """The browser itself loads each embedded MP3 (a harness page reads every player's duration)."""
    import subprocess

    result = _result()
    page = write_outputs(tmp_path, result, _audio(result))["html"].read_text(encoding="utf-8")
    sources = re.findall(r"src='(data:audio/mpeg;base64,[^']+)'", page)
    harness = tmp_path / "harness.html"
    harness.write_text(
        "<html><body><script>const srcs=" + json.dumps(sources) + ";let out=[],n=0;"
        "const done=()=>{if(++n==srcs.length)document.body.setAttribute('data-done',out.join(','))};"
        "srcs.forEach((s,i)=>{const a=new Audio();a.preload='auto';"
        "a.onloadedmetadata=()=>{out[i]=a.duration.toFixed(2);done()};a.onerror=()=>{out[i]='ERR';done()};"
        "a.src=s;});</script></body></html>"
    )
    dom = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            harness.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = re.search(r'data-done="([^"]*)"', dom)
    assert found, "the browser did not load the players"
    durations = found.group(1).split(",")
    assert len(durations) == len(sources) == 12
    assert "ERR" not in durations
    assert all(float(d) > 0 for d in durations)
