"""`fish-speech decode-vq`: turn a codes file (10 x frames) back into audio, for previews."""

from __future__ import annotations

import argparse

HELP = "decode VQ codes (.npy, 10 x frames) to a 44.1 kHz WAV with the codec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "codes", metavar="CODES.npy", help="codes written by extract-vq (int, shape (10, frames))"
    )
    parser.add_argument("--checkpoint-path", required=True, metavar="CODEC.pth", help="codec weights")
    parser.add_argument("--output", required=True, metavar="OUT.wav", help="WAV file to write (16-bit PCM)")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda (default auto)")


def run(args: argparse.Namespace) -> int:
    from fish_speech.codec.decode import decode_file

    seconds = decode_file(args.codes, args.checkpoint_path, args.output, device=args.device)
    print(f"decode-vq: wrote {args.output} ({seconds:.2f} s)")
    return 0
