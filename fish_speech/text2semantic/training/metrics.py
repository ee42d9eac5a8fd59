"""Per-step training/validation metrics: `metrics.json`, `metrics.csv` and a `loss.png` plot.

Rows are keyed by optimizer step, so a resumed run drops whatever the killed run logged after the
checkpoint it resumes from and continues the same files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
from pathlib import Path

from fish_speech.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

TRAIN_FIELDS = (
    "loss",
    "base_loss",
    "semantic_loss",
    "top5_accuracy",
    "lr",
    "grad_norm",
    "tokens",
    "step_time_s",
    "tokens_per_s",
)
VAL_FIELDS = ("loss", "base_loss", "semantic_loss", "top5_accuracy")


class MetricsLog:
    """Train and validation rows by step, written as JSON + CSV + PNG into one folder."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.train: dict[int, dict[str, float]] = {}
        self.val: dict[int, dict[str, float]] = {}
        self.resumes: list[int] = []  # steps a run was resumed from (marked on the plot)

    @property
    def json_path(self) -> Path:
        return self.out_dir / "metrics.json"

    def load(self, up_to_step: int) -> None:
        """Read an earlier run's `metrics.json`, keeping rows up to `up_to_step` (the resume point)."""
        if not self.json_path.is_file():
            return
        try:
            data = json.loads(self.json_path.read_text(encoding="utf-8"))
            self.train = {int(r["step"]): r for r in data.get("train", []) if int(r["step"]) <= up_to_step}
            self.val = {int(r["step"]): r for r in data.get("val", []) if int(r["step"]) <= up_to_step}
            self.resumes = sorted({int(s) for s in data.get("resumes", []) if int(s) <= up_to_step})
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); starting the metrics afresh", self.json_path, e)
            self.train, self.val, self.resumes = {}, {}, []

    def mark_resume(self, step: int) -> None:
        """Record that training continued from the checkpoint of `step`."""
        self.resumes = sorted({*self.resumes, int(step)})

    def add_train(self, step: int, values: dict[str, float]) -> None:
        self.train[step] = {"step": step, **{k: _clean(v) for k, v in values.items()}}

    def add_val(self, step: int, values: dict[str, float]) -> None:
        self.val[step] = {"step": step, **{k: _clean(v) for k, v in values.items()}}

    def best_val(self, steps: set[int] | None = None) -> tuple[int, float] | None:
        """(step, loss) of the lowest finite validation loss, among `steps` if given."""
        rows = [
            (r["loss"], s)
            for s, r in self.val.items()
            if r.get("loss") is not None and (steps is None or s in steps)
        ]
        if not rows:
            return None
        loss, step = min(rows)
        return step, loss

    def write(
        self, checkpoint_steps: list[int] | None = None, best_step: int | None = None, plot: bool = True
    ) -> None:
        """Write `metrics.json`, `metrics.csv` and (with `plot`) `loss.png`, each atomically."""
        data = {
            "train": [self.train[s] for s in sorted(self.train)],
            "val": [self.val[s] for s in sorted(self.val)],
            "resumes": self.resumes,
        }
        atomic_write_text(self.json_path, json.dumps(data, indent=1) + "\n")
        atomic_write_text(self.out_dir / "metrics.csv", self._csv())
        if not plot:
            return
        try:
            self._plot(checkpoint_steps or [], best_step)
        except Exception as e:  # a plot must never stop training
            log.warning("could not draw loss.png: %s", e)

    def _csv(self) -> str:
        columns = ["step", *(f"train_{k}" for k in TRAIN_FIELDS), *(f"val_{k}" for k in VAL_FIELDS)]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for step in sorted(set(self.train) | set(self.val)):
            t, v = self.train.get(step, {}), self.val.get(step, {})
            writer.writerow(
                [step, *(_fmt(t.get(k)) for k in TRAIN_FIELDS), *(_fmt(v.get(k)) for k in VAL_FIELDS)]
            )
        return buf.getvalue()

    def _plot(self, checkpoint_steps: list[int], best_step: int | None) -> None:
        import matplotlib.pyplot as plt

        fig = self.figure(checkpoint_steps, best_step)
        with atomic_path(self.out_dir / "loss.png", suffix=".png") as tmp:
            fig.savefig(tmp)
        plt.close(fig)

    def figure(self, checkpoint_steps: list[int], best_step: int | None):
        """The loss plot as a matplotlib Figure: losses, learning rate, checkpoints, resumes, best."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(9, 5), dpi=100)
        steps = sorted(self.train)
        losses = [self.train[s].get("loss") for s in steps]
        handles = []
        if steps:
            handles += ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train loss")
            handles += ax.plot(
                steps, _ema(losses), color="tab:blue", linewidth=1.8, label="train loss (smoothed)"
            )
        vsteps = sorted(s for s in self.val if self.val[s].get("loss") is not None)
        if vsteps:
            handles += ax.plot(
                vsteps,
                [self.val[s]["loss"] for s in vsteps],
                "o-",
                color="tab:orange",
                label="validation loss",
            )
        for i, s in enumerate(checkpoint_steps):
            line = ax.axvline(
                s, color="grey", alpha=0.3, linewidth=0.8, label="checkpoint" if i == 0 else None
            )
            if i == 0:
                handles.append(line)
        for i, s in enumerate(self.resumes):
            line = ax.axvline(
                s, color="tab:purple", linestyle="--", linewidth=1.2, label="resumed here" if i == 0 else None
            )
            if i == 0:
                handles.append(line)
        if best_step is not None and best_step in self.val:
            handles += ax.plot(
                [best_step],
                [self.val[best_step]["loss"]],
                "*",
                color="tab:red",
                markersize=14,
                label=f"best checkpoint (step {best_step})",
            )
        lrs = [(s, self.train[s].get("lr")) for s in steps if self.train[s].get("lr") is not None]
        if lrs:
            lr_ax = ax.twinx()
            handles += lr_ax.plot(
                [s for s, _ in lrs],
                [v for _, v in lrs],
                color="tab:green",
                linewidth=1,
                alpha=0.8,
                linestyle=":",
                label="learning rate (right axis)",
            )
            lr_ax.set_ylabel("learning rate")
            lr_ax.set_ylim(bottom=0)
            lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimizer steps are whole numbers
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (token + codebook cross-entropy)")
        ax.set_title("LoRA fine-tuning")
        ax.grid(alpha=0.3)
        if handles:  # below the axes, never over the curves
            fig.legend(handles=handles, loc="lower center", ncol=min(3, len(handles)), frameon=False)
            fig.tight_layout(rect=(0, 0.06 * ((len(handles) + 2) // 3) + 0.02, 1, 1))
        else:
            fig.tight_layout()
        return fig


def _ema(values: list[float | None], alpha: float = 0.1) -> list[float | None]:
    out, acc = [], None
    for v in values:
        if v is not None:
            acc = v if acc is None else (1 - alpha) * acc + alpha * v
        out.append(acc)
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


# (column title, source, key, format) of the HTML table; source "train" or "val"
_TABLE = (
    ("train loss", "train", "loss", ".4f"),
    ("validation loss", "val", "loss", ".4f"),
    ("top-5 accuracy", "train", "top5_accuracy", ".3f"),
    ("learning rate", "train", "lr", ".2e"),
    ("gradient norm", "train", "grad_norm", ".3g"),
    ("tokens/s", "train", "tokens_per_s", ",.0f"),
    ("s/step", "train", "step_time_s", ".3f"),
)


def loss_report_html(out_dir: str | os.PathLike, title: str = "LoRA training", last_rows: int = 15) -> str:
    """A self-contained HTML page for a training folder: headline numbers, `loss.png`, a metrics table.

    The table has every validation step and the last `last_rows` steps, numbers rounded for reading.
    """
    import base64
    import html

    out_dir = Path(out_dir)
    metrics = MetricsLog(out_dir)
    metrics.load(up_to_step=10**12)
    summary: dict = {}
    with contextlib.suppress(OSError, ValueError):
        summary = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    facts = [
        ("steps", summary.get("steps"), "d"),
        ("final train loss", summary.get("final_train_loss"), ".4f"),
        ("final validation loss", summary.get("final_val_loss"), ".4f"),
        ("best validation loss", summary.get("best_val_loss"), ".4f"),
        ("best checkpoint", summary.get("best_checkpoint"), ""),
        ("last checkpoint", summary.get("last_checkpoint"), ""),
        ("tokens/s", summary.get("tokens_per_s"), ",.0f"),
        ("resumed from step", ", ".join(map(str, metrics.resumes)) or None, ""),
    ]
    items = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(_cell(v, f))}</td></tr>" for k, v, f in facts if v is not None
    )
    if items:
        body.append(f"<table class='facts'>{items}</table>")
    png = out_dir / "loss.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        body.append(f'<img alt="loss curves" src="data:image/png;base64,{data}">')
    else:
        body.append("<p>No loss.png was written.</p>")
    steps = sorted(set(metrics.val) | set(sorted(metrics.train)[-last_rows:]))
    if steps:
        head = "".join(f"<th>{esc(t)}</th>" for t, *_ in _TABLE)
        rows = []
        for step in steps:
            cells = []
            for _, source, key, f in _TABLE:
                row = (metrics.train if source == "train" else metrics.val).get(step, {})
                cells.append(f"<td>{esc(_cell(row.get(key), f))}</td>")
            marks = " (resumed)" if step in metrics.resumes else ""
            rows.append(f"<tr><th>{step}{marks}</th>{''.join(cells)}</tr>")
        body.append(
            f"<h2>Metrics: every validation step and the last {last_rows} steps</h2>"
            f"<table class='metrics'><tr><th>step</th>{head}</tr>{''.join(rows)}</table>"
            "<p>All rows: metrics.csv and metrics.json in the model artifact.</p>"
        )
    style = (
        "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
        "img{max-width:100%;border:1px solid #ddd}"
        "table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px}"
        "table.metrics td{text-align:right;font-variant-numeric:tabular-nums}"
        "table.metrics th{background:#f4f4f4}table.facts th{text-align:left;background:#f4f4f4}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>"
    )


def _cell(value, spec: str) -> str:
    if value is None:
        return ""
    if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)
