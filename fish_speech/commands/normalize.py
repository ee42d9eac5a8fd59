"""`fish-speech normalize`: loudness-normalise a data folder (replaces `fap loudness-norm`)."""

from __future__ import annotations

import argparse

from fish_speech.parallel import available_cores

HELP = "peak- then loudness-normalise every usable clip to WAV (as fap loudness-norm), copying each .lab"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "input_dir", metavar="IN", help="raw data folder: SPEAKER/clip.{wav,flac,mp3,...} + clip.lab"
    )
    parser.add_argument(
        "output_dir", metavar="OUT", help="output folder (same layout, .wav + .lab); not inside IN"
    )
    parser.add_argument("--clean", action="store_true", help="delete OUT before writing")
    parser.add_argument("--overwrite", action="store_true", help="redo clips whose output already exists")
    from fish_speech.dataset.normalize import Settings
    from fish_speech.dataset.validate import DEFAULT_MAX_SECONDS
    from fish_speech.options import add_option_flags

    add_option_flags(parser, Settings)  # --loudness, --peak, --block-size
    parser.add_argument(
        "--num-workers",
        type=int,
        default=available_cores(),
        metavar="N",
        help="worker processes (default: the cores available)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=DEFAULT_MAX_SECONDS,
        metavar="S",
        help=f"skip clips longer than S seconds (default {DEFAULT_MAX_SECONDS:g}; 0 = no limit)",
    )
    parser.add_argument(
        "--report", metavar="R.md", help="write a Markdown report (normalisation + input validation)"
    )
    parser.add_argument("--json", metavar="R.json", help="write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from fish_speech.dataset.normalize import Settings, normalize_dir, write_summary
    from fish_speech.errors import UserError
    from fish_speech.options import options_from_args

    if args.num_workers < 1:
        raise UserError(f"--num-workers must be at least 1, got {args.num_workers}")
    if args.block_size <= 0:
        raise UserError(f"--block-size must be positive, got {args.block_size}")
    summary = normalize_dir(
        args.input_dir,
        args.output_dir,
        options_from_args(Settings, args),
        clean=args.clean,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
        max_seconds=args.max_seconds,
    )
    write_summary(summary, args.json, args.report)
    print(summary.format())
    if not summary.usable:
        skipped = [o.reason for o in summary.outcomes if o.status == "skipped"]
        reasons = ", ".join(f"{skipped.count(r)} x {r}" for r in sorted(set(skipped)))
        raise UserError(
            f"{args.input_dir}: no usable clip ({len(skipped)} skipped: {reasons})", exit_status=1
        )
    return 0
