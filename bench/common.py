"""Shared helpers for the benchmarks under bench/: result rows, machine facts, Markdown + JSON output.

A benchmark is a module `bench/<name>.py` with `main(quick: bool = False) -> list[Row]`; it measures
our figure and a baseline's figure in the same run. `bench/run_all.py` (`make bench`) runs them all.
Running one file alone (`python bench/<name>.py`) should end with `report("<name>", rows)`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

if str(REPO) not in sys.path:  # `python bench/x.py` from anywhere imports the project
    sys.path.insert(0, str(REPO))


@dataclass
class Row:
    """One measured figure: ours and the baseline's, same unit, same run. ratio = ours / baseline."""

    name: str
    ours: float
    baseline: float | None
    unit: str
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0 or math.isnan(self.baseline):
            return None
        return self.ours / self.baseline

    def to_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio}


def machine_info() -> dict:
    """Cores, CPU model, Python and torch versions and the device a benchmark ran on."""
    info = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": None,
        "device": "cpu",
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"] = f"cuda ({torch.cuda.get_device_name(0)})"
    except ImportError:
        pass
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mib() -> float:
    """Peak resident memory of this process since it started (or exec'd), in MiB.

    Linux's VmHWM belongs to the process image, so unlike `ru_maxrss` it does not carry over the
    parent's resident size through fork + exec (which would make every child look as large as a
    big `make bench` parent).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def run_python(code: str, marker: str) -> list[str]:
    """Run `code` in a fresh Python process (repo importable); the fields after `marker` in its output."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith(marker + " "))
    return line.split()[1:]


def growth_row(step: str, per_hour: dict[int, tuple[float, float]], baseline: str) -> Row:
    """How the cost per audio hour grows from 1x to the largest scale: (ours, baseline) per scale."""
    last = max(per_hour)
    return Row(
        f"{step} cost growth: time per audio hour at {last}x / at 1x",
        per_hour[last][0] / per_hour[1][0],
        per_hour[last][1] / per_hour[1][1],
        "ratio",
        f"1.0 = linear in the data; below 1 = fixed costs (start-up) amortised (baseline: {baseline})",
    )


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of `repeat` calls, in seconds."""
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.4g}"
    return f"{value:.3e}"


def to_markdown(rows: Sequence[Row], machine: dict) -> str:
    """A Markdown table of `rows` followed by one line describing the machine."""
    lines = [
        "| benchmark | ours | baseline | unit | ratio (ours/baseline) | note |",
        "|---|---:|---:|---|---:|---|",
    ]

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    for r in rows:
        lines.append(
            f"| {cell(r.name)} | {_fmt(r.ours)} | {_fmt(r.baseline)} | {cell(r.unit)} | {_fmt(r.ratio)} | {cell(r.note)} |"
        )
    lines.append("")
    lines.append(
        f"Machine: {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"torch {machine['torch']}, device {machine['device']}"
    )
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """Write `text` atomically (temporary name in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # ignored by git
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json(path: Path, data: object) -> None:
    """Write JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")


def report(name: str, rows: Sequence[Row], results_dir: Path = RESULTS_DIR) -> Path:
    """Print the Markdown table of `rows` and write `results_dir/<name>.json`; return the JSON path."""
    machine = machine_info()
    print(to_markdown(rows, machine))
    path = results_dir / f"{name}.json"
    write_json(
        path, {"name": name, "machine": machine, "time": time.time(), "rows": [r.to_dict() for r in rows]}
    )
    return path
