"""`fish-speech extract-vq`: encode every clip under a folder to VQ codes (`<stem>.npy` beside it, or
at the same relative path under `--output-dir`)."""

from __future__ import annotations

import argparse
import json

HELP = (
    "encode every audio clip under DATA_DIR with the codec: <stem>.npy (int64, 10 x frames) beside each clip, "
    "or under --output-dir"
)

DEFAULT_CHECKPOINT = "checkpoints/openaudio-s1-mini/codec.pth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fish_speech.codec.options import ExtractOptions
    from fish_speech.options import add_option_flags

    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder scanned recursively for audio files")
    parser.add_argument(
        "--checkpoint-path",
        default=DEFAULT_CHECKPOINT,
        metavar="CODEC.pth",
        help=f"codec weights (default {DEFAULT_CHECKPOINT})",
    )
    parser.add_argument(
        "--config-name",
        default="modded_dac_vq",
        help="accepted for upstream compatibility; the architecture is read from the checkpoint's shapes",
    )
    add_option_flags(parser, ExtractOptions)
    parser.add_argument(
        "--report", metavar="PATH.json", help="also write the summary (files, skips with reasons) as JSON"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from fish_speech.codec.extract_vq import extract_vq
    from fish_speech.codec.options import ExtractOptions
    from fish_speech.fileio import atomic_write_text
    from fish_speech.options import options_from_args

    if args.config_name != "modded_dac_vq":
        logging.getLogger(__name__).warning(
            "--config-name %s ignored: the codec architecture is inferred from %s",
            args.config_name,
            args.checkpoint_path,
        )
    summary = extract_vq(args.data_dir, args.checkpoint_path, options_from_args(ExtractOptions, args))
    if args.report:
        atomic_write_text(args.report, json.dumps(summary, indent=2) + "\n")
    skipped = summary["skipped"]
    print(
        f"extract-vq: {summary['files']} files: {summary['written']} written, {summary['already_done']} already done, "
        f"{len(skipped)} skipped; {summary['audio_hours']:.3f} h of audio, {summary['frames']} frames "
        f"in {summary['wall_seconds']:.1f} s"
    )
    for s in skipped:
        print(f"  skipped {s['path']}: {s['reason']}")
    return 0
