"""`fish-speech extract-vq`: encode every clip under a folder to VQ codes (`<stem>.npy` beside it, or
at the same relative path under `--output-dir`)."""

from __future__ import annotations

import argparse
import json

from fish_speech.codec.options import BATCH_SIZE, DEFAULT_PRECISION, PRECISIONS

HELP = (
    "encode every audio clip under DATA_DIR with the codec: <stem>.npy (int64, 10 x frames) beside each clip, "
    "or under --output-dir"
)

DEFAULT_CHECKPOINT = "checkpoints/openaudio-s1-mini/codec.pth"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dir", metavar="DATA_DIR", help="folder scanned recursively for audio files")
    parser.add_argument(
        "--checkpoint-path",
        default=DEFAULT_CHECKPOINT,
        metavar="CODEC.pth",
        help=f"codec weights (default {DEFAULT_CHECKPOINT})",
    )
    parser.add_argument(
        "--output-dir",
        metavar="CODES",
        help="write CODES/<rel>/<stem>.npy (rel: the clip's folder under DATA_DIR) instead of beside each "
        "clip; DATA_DIR is then only read",
    )
    parser.add_argument(
        "--config-name",
        default="modded_dac_vq",
        help="accepted for upstream compatibility; the architecture is read from the checkpoint's shapes",
    )
    parser.add_argument(
        "--batch-size", type=int, default=BATCH_SIZE, help=f"clips per batch (default {BATCH_SIZE})"
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=1,
        help="DataLoader processes decoding audio while the model runs (default 1)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N (default auto)"
    )
    parser.add_argument("--overwrite", action="store_true", help="re-encode clips whose .npy already exists")
    parser.add_argument(
        "--shard-index", type=int, default=0, metavar="I", help="this process's shard (default 0)"
    )
    parser.add_argument(
        "--num-shards",
        type=int,
        default=1,
        metavar="N",
        help="number of shards: sorted files[I::N] (default 1)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=DEFAULT_PRECISION,
        help="float32 reproduces upstream's codes (default); bfloat16 autocast is faster on GPUs but may change codes",
    )
    parser.add_argument(
        "--report", metavar="PATH.json", help="also write the summary (files, skips with reasons) as JSON"
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from fish_speech.codec.extract_vq import extract_vq
    from fish_speech.fileio import atomic_write_text

    if args.config_name != "modded_dac_vq":
        logging.getLogger(__name__).warning(
            "--config-name %s ignored: the codec architecture is inferred from %s",
            args.config_name,
            args.checkpoint_path,
        )
    summary = extract_vq(
        args.data_dir,
        args.checkpoint_path,
        output_dir=args.output_dir,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        overwrite=args.overwrite,
        shard_index=args.shard_index,
        num_shards=args.num_shards,
        precision=args.precision,
    )
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
