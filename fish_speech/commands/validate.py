"""`fish-speech validate`: report every clip of a data folder as ok or skipped, with the reason."""

from __future__ import annotations

import argparse

from fish_speech.parallel import available_cores

HELP = "check every clip (transcript, decoding, length, level) and report ok / skipped with the reason"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fish_speech.dataset.validate import DEFAULT_MAX_SECONDS

    parser.add_argument(
        "data_dir", metavar="DATA_DIR", help="folder of SPEAKER/clip.{wav,flac,mp3,...} + clip.lab"
    )
    parser.add_argument("--report", metavar="R.md", help="write the report as Markdown")
    parser.add_argument("--json", metavar="R.json", help="write the report as JSON")
    parser.add_argument(
        "--source",
        metavar="URI",
        help="name the data as URI in the report (where DATA_DIR was copied from; default DATA_DIR)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        metavar="S",
        help=f"skip clips longer than S seconds (default {DEFAULT_MAX_SECONDS:g}: the longest input the codec "
        "encoder accepts; 0 = no limit)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=available_cores(),
        metavar="N",
        help="decode in N processes (default: the cores available)",
    )


def run(args: argparse.Namespace) -> int:
    from fish_speech.dataset.validate import validate_dir, write_report
    from fish_speech.errors import UserError

    if args.num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {args.num_workers}")

    report = validate_dir(
        args.data_dir, max_seconds=args.max_seconds, num_workers=args.num_workers, source=args.source
    )
    write_report(report, args.json, args.report)
    s = report.summary()
    print(
        f"{s['clips']} clips: {s['ok']} ok, {s['skipped']} skipped; "
        f"{s['minutes_ok']:.2f} usable minutes from {s['speakers']} speaker(s)"
    )
    for reason, n in report.reason_counts().items():
        print(f"  skipped {n} x {reason}")
    if not report.usable:
        reasons = ", ".join(f"{n} x {r}" for r, n in report.reason_counts().items())
        raise UserError(
            f"{args.source or args.data_dir}: no usable clip ({s['clips']} skipped: {reasons})", exit_status=1
        )
    return 0
