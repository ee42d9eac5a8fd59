"""`make bench`: run every benchmark under bench/ and print one table (also bench/results/all.json).

A benchmark is any `bench/*.py` (other than this file and `common.py`) whose module defines
`main(quick: bool = False) -> list[Row]`. A benchmark that fails is reported as a failed row and
the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BENCH_DIR, RESULTS_DIR, Row, machine_info, to_markdown, write_json, write_text  # noqa: E402

NOT_BENCHMARKS = {"common", "run_all"}


def discover(only: list[str] | None = None) -> list[Path]:
    """Benchmark files in name order (optionally only those named)."""
    files = [
        p
        for p in sorted(BENCH_DIR.glob("*.py"))
        if p.stem not in NOT_BENCHMARKS and not p.stem.startswith("_")
    ]
    if only:
        missing = set(only) - {p.stem for p in files}
        if missing:
            raise SystemExit(f"run_all: no benchmark named {', '.join(sorted(missing))}")
        files = [p for p in files if p.stem in only]
    return files


def run_one(path: Path, quick: bool) -> list[Row] | None:
    """Import `path` and call its `main`; None if it is not a benchmark."""
    spec = importlib.util.spec_from_file_location(f"bench_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    main = getattr(module, "main", None)
    if not callable(main):
        return None
    rows = main(quick=quick) if "quick" in inspect.signature(main).parameters else main()
    return list(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these benchmarks (file stems)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="output folder (default bench/results)"
    )
    args = parser.parse_args(argv)

    all_rows: list[Row] = []
    per_bench: dict[str, dict] = {}
    failed = False
    for path in discover(args.names):
        print(f"== {path.stem}", flush=True)
        start = time.perf_counter()
        try:
            rows = run_one(path, args.quick)
        except Exception as e:  # keep going: one broken benchmark must not hide the others
            traceback.print_exc()
            rows = [Row(f"{path.stem}: FAILED", float("nan"), None, "", f"{type(e).__name__}: {e}"[:200])]
            failed = True
        if rows is None:
            print("   (no main(): skipped)")
            continue
        seconds = time.perf_counter() - start
        per_bench[path.stem] = {"seconds": seconds, "rows": [r.to_dict() for r in rows]}
        all_rows += rows

    machine = machine_info()
    table = to_markdown(all_rows, machine)
    print()
    print(table)
    for stem, data in per_bench.items():
        write_json(args.results / f"{stem}.json", {"name": stem, "machine": machine, **data})
    write_json(args.results / "all.json", {"machine": machine, "time": time.time(), "benchmarks": per_bench})
    write_text(args.results / "all.md", table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
