"""`fish-speech train`: LoRA or full fine-tuning of the text-to-semantic model on a protos dataset.

Runs as one process, or under `torchrun` (any `--nnodes` / `--nproc-per-node`: the world comes from
its environment, each rank trains on its share of every batch, rank 0 writes the checkpoints).

The flags are generated from `TrainOptions` (fish_speech/text2semantic/options.py), where each setting
is declared once with its default and help.
"""

from __future__ import annotations

import argparse

HELP = "fine-tune the text-to-semantic model, LoRA or full (checkpoints, metrics, loss plot, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from fish_speech.options import add_option_flags
    from fish_speech.text2semantic.options import TRAIN_GROUPS, TrainOptions

    add_option_flags(parser, TrainOptions, TRAIN_GROUPS)


def run(args: argparse.Namespace) -> int:
    from fish_speech.options import options_from_args
    from fish_speech.reports import fmt
    from fish_speech.text2semantic.options import TrainOptions
    from fish_speech.text2semantic.train import run_training

    devices = args.devices if args.devices == "auto" else int(args.devices)
    summary = run_training(options_from_args(TrainOptions, args, devices=devices))
    best = summary.get("best_checkpoint") or "-"
    print(
        f"trained {summary['steps']} steps; final train loss {fmt(summary['final_train_loss'])}, "
        f"best validation loss {fmt(summary['best_val_loss'])} ({best}); "
        f"checkpoints: earliest {summary['earliest_checkpoint']}, last {summary['last_checkpoint']}"
    )
    if summary.get("truncated_samples") is not None:
        print(
            f"{summary['truncated_samples']} training samples were cut to --max-length "
            f"{args.max_length} tokens (windows of several clips, as upstream)"
        )
    if summary.get("model_dir"):
        print(f"fine-tuned model (from {summary['model_from_checkpoint']}): {summary['model_dir']}")
    return 0
