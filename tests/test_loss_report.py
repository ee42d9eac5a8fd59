"""The loss plot and its HTML page: legend off the curves, whole-number steps, learning rate, resumes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from fish_speech.text2semantic.train import train
from fish_speech.text2semantic.training.metrics import MetricsLog, loss_report_html

T2S = Path(__file__).parent / "data" / "t2s"
FAST = dict(batch_size=2, max_length=160, num_workers=0, log_every=1, learning_rate=1e-3, warmup_steps=2)


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory) -> Path:
    """3 steps, then resumed to 5: the metrics remember the resume."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("resumed")
        train(T2S / "protos", T2S / "ckpt", out, max_steps=3, save_every=3, **FAST)
        train(T2S / "protos", T2S / "ckpt", out, max_steps=5, save_every=3, resume=True, **FAST)
    finally:
        torch.set_num_threads(threads)
    return out


def test_resume_points_are_recorded(resumed_run):
    data = json.loads((resumed_run / "metrics.json").read_text())
    assert data["resumes"] == [3]
    assert [r["step"] for r in data["train"]] == [1, 2, 3, 4, 5]
    assert (resumed_run / "loss.png").stat().st_size > 10_000


def test_plot_layout(resumed_run):
    import matplotlib.pyplot as plt

    metrics = MetricsLog(resumed_run)
    metrics.load(up_to_step=10**12)
    fig = metrics.figure([3, 5], best_step=5)
    try:
        ax, lr_ax = fig.axes
        fig.canvas.draw()
        assert all(float(t).is_integer() for t in ax.get_xticks())  # no step 2.5
        assert lr_ax.get_ylabel() == "learning rate"
        assert max(lr_ax.lines[0].get_ydata()) == pytest.approx(1e-3)
        (legend,) = fig.legends
        renderer = fig.canvas.get_renderer()
        assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        labels = [t.get_text() for t in legend.get_texts()]
        assert "resumed here" in labels and "learning rate (right axis)" in labels and "checkpoint" in labels
        resume_lines = [ln for ln in ax.lines if ln.get_label() == "resumed here"]
        assert list(resume_lines[0].get_xdata()) == [3, 3]
    finally:
        plt.close(fig)


def test_html_page_has_the_numbers_rounded(resumed_run):
    page = loss_report_html(resumed_run, "LoRA training: r_8_alpha_16")
    assert "data:image/png;base64," in page
    assert "<th>best validation loss</th>" in page and "<th>resumed from step</th><td>3</td>" in page
    assert "<th>3 (resumed)</th>" in page
    assert "1.00e-03" in page  # learning rate, not 0.0010000000000000002
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)
    assert not re.search(r"\d\.\d{7,}", text)
