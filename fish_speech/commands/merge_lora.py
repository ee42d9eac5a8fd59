"""`fish-speech merge-lora`: fold LoRA adapters into the base model; write a full checkpoint folder."""

from __future__ import annotations

import argparse

from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG

HELP = "merge LoRA weights into the base model: a checkpoint folder in the base layout (codec.pth included)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lora-config", default=DEFAULT_LORA_CONFIG, help="LoRA config the adapters were trained with"
    )
    parser.add_argument("--lora-r", type=int, default=None, help="override the config's rank")
    parser.add_argument("--lora-alpha", type=float, default=None, help="override the config's alpha")
    parser.add_argument("--base-weight", required=True, metavar="DIR", help="base checkpoint folder")
    parser.add_argument(
        "--lora-weight",
        required=True,
        metavar="CKPT",
        help="LoRA .ckpt (ours or upstream's), or best | last | earliest | step_N of --train-output",
    )
    parser.add_argument(
        "--train-output", metavar="DIR", help="the folder `fish-speech train` wrote (for selectors)"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="merged checkpoint folder")
    parser.add_argument(
        "--dtype",
        default="base",
        help="weights dtype: base (that of the base model.pth), float32 or bfloat16",
    )


def run(args: argparse.Namespace) -> int:
    from fish_speech.text2semantic.merge import merge_lora

    out = merge_lora(
        args.base_weight,
        args.lora_weight,
        args.output,
        lora_config=args.lora_config,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        train_output=args.train_output,
        dtype=args.dtype,
    )
    print(f"merged checkpoint written to {out}")
    return 0
