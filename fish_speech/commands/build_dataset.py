"""`fish-speech build-dataset`: pack codes + transcripts into the `*.protos` training stream."""

from __future__ import annotations

import argparse

from fish_speech.parallel import available_cores

HELP = "pack each clip's codes (.npy) and transcript into length-prefixed TextData shards (*.protos)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="PATH",
        help="data folder (scanned recursively for *.npy) or filelist (path|speaker|language|text); repeatable",
    )
    parser.add_argument(
        "--codes",
        action="append",
        metavar="DIR",
        help="folder with the codes at the clips' relative paths (extract-vq --output-dir); repeatable, "
        "a clip may have codes in one of them only (default: the .npy beside each clip)",
    )
    parser.add_argument(
        "--output",
        default="data/quantized-dataset-ft",
        metavar="DIR",
        help="output folder for NNNNNNNN.protos",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=min(16, available_cores()),
        help="worker processes (default: the cores available, at most 16 as upstream)",
    )
    parser.add_argument(
        "--text-extension",
        action="append",
        metavar="EXT",
        help="transcript suffix; repeat for several texts per clip (default .lab)",
    )
    parser.add_argument(
        "--shard-size",
        type=float,
        default=10,
        metavar="MB",
        help="close a shard once it exceeds this size (default 10)",
    )
    parser.add_argument(
        "--num-codebooks",
        type=int,
        default=None,
        help="expected code rows per clip (default: those of the first readable .npy); others are skipped",
    )
    parser.add_argument("--report", metavar="PATH.json", help="also write the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from fish_speech.dataset.build_dataset import build_dataset

    summary = build_dataset(
        inputs=args.input,
        output=args.output,
        text_extensions=args.text_extension or [".lab"],
        num_workers=args.num_workers,
        shard_size_mb=args.shard_size,
        num_codebooks=args.num_codebooks,
        report=args.report,
        codes=args.codes or (),
    )
    print(summary.format())
    return 0
