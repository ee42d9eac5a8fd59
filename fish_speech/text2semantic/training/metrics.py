"""Per-step training/validation metrics: `metrics.json`, `metrics.csv` and a `loss.png` plot.

Rows are keyed by optimizer step, so a resumed run drops whatever the killed run logged after the
checkpoint it resumes from and continues the same files.
"""

from __future__ import annotations

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
        except (ValueError, KeyError, TypeError) as e:
            log.warning("%s: unreadable (%s); starting the metrics afresh", self.json_path, e)
            self.train, self.val = {}, {}

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
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        steps = sorted(self.train)
        losses = [self.train[s].get("loss") for s in steps]
        if steps:
            ax.plot(steps, losses, color="tab:blue", alpha=0.35, linewidth=1, label="train loss")
            ax.plot(steps, _ema(losses), color="tab:blue", linewidth=1.8, label="train loss (smoothed)")
        vsteps = sorted(s for s in self.val if self.val[s].get("loss") is not None)
        if vsteps:
            ax.plot(
                vsteps,
                [self.val[s]["loss"] for s in vsteps],
                "o-",
                color="tab:orange",
                label="validation loss",
            )
        for s in checkpoint_steps:
            ax.axvline(s, color="grey", alpha=0.25, linewidth=0.8)
        if best_step is not None and best_step in self.val:
            ax.plot(
                [best_step],
                [self.val[best_step]["loss"]],
                "*",
                color="tab:red",
                markersize=14,
                label=f"best checkpoint (step {best_step})",
            )
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss (token + codebook cross-entropy)")
        ax.set_title("LoRA fine-tuning" + ("  (grey lines: checkpoints)" if checkpoint_steps else ""))
        ax.grid(alpha=0.3)
        if steps or vsteps:
            ax.legend(loc="upper right")
        fig.tight_layout()
        with atomic_path(self.out_dir / "loss.png", suffix=".png") as tmp:
            fig.savefig(tmp)
        plt.close(fig)


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
