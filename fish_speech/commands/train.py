"""`fish-speech train`: LoRA fine-tuning of the text-to-semantic model on a protos dataset."""

from __future__ import annotations

import argparse

HELP = "LoRA fine-tune the text-to-semantic model (checkpoints, metrics, loss plot, resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="PROTOS",
        help="protos file or folder (searched recursively); repeatable",
    )
    parser.add_argument(
        "--base-weight",
        required=True,
        metavar="DIR",
        help="base checkpoint folder (model.pth, config.json, tokenizer files)",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="results folder, e.g. results/PROJECT (checkpoints/, metrics, loss.png, summary.json)",
    )
    lora = parser.add_argument_group("LoRA")
    lora.add_argument(
        "--lora-config",
        default="r_8_alpha_16",
        help="r_8_alpha_16 (default), r_32_alpha_16_fast, or r_<R>_alpha_<A>",
    )
    lora.add_argument("--lora-r", type=int, default=None, help="override the config's rank")
    lora.add_argument("--lora-alpha", type=float, default=None, help="override the config's alpha")
    lora.add_argument("--lora-dropout", type=float, default=None, help="override the config's dropout")
    opt = parser.add_argument_group("optimisation (defaults: upstream's fine-tuning config)")
    opt.add_argument("--max-steps", type=int, default=10000, help="optimizer steps (default 10000)")
    opt.add_argument("--batch-size", type=int, default=4, help="samples per batch and device (default 4)")
    opt.add_argument(
        "--accumulate-grad-batches", type=int, default=1, help="batches per optimizer step (default 1)"
    )
    opt.add_argument("--learning-rate", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    opt.add_argument("--warmup-steps", type=int, default=10, help="linear warm-up steps (default 10)")
    opt.add_argument("--max-length", type=int, default=4096, help="tokens per sample (default 4096)")
    opt.add_argument(
        "--precision",
        default="auto",
        help="auto (bf16-mixed on a GPU, 32 on CPU), 32, bf16-mixed, bf16-true, 16-mixed",
    )
    opt.add_argument("--seed", type=int, default=42, help="data order, adapter init and dropout (default 42)")
    val = parser.add_argument_group("validation and checkpoints")
    val.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of each speaker's clips held out for validation (default 0.1; 0 = none)",
    )
    val.add_argument(
        "--val-every", type=int, default=None, help="validate every N steps (default: --save-every)"
    )
    val.add_argument(
        "--val-batches", type=int, default=10, help="at most this many validation batches (default 10)"
    )
    val.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps (default 100)")
    val.add_argument(
        "--keep-last",
        type=int,
        default=5,
        help="keep the N newest checkpoints plus the earliest and the best (default 5; 0 = all)",
    )
    val.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last complete checkpoint in --output (starts fresh if there is none)",
    )
    val.add_argument(
        "--overwrite", action="store_true", help="delete an earlier run's checkpoints and start again"
    )
    run_ = parser.add_argument_group("run")
    run_.add_argument("--num-workers", type=int, default=2, help="data-loader worker processes (default 2)")
    run_.add_argument(
        "--log-every", type=int, default=10, help="log and write metrics every N steps (default 10)"
    )
    run_.add_argument(
        "--devices", default="auto", help="devices to use: auto (all GPUs, DDP when > 1) or a count"
    )


def run(args: argparse.Namespace) -> int:
    from fish_speech.text2semantic.train import train

    devices = args.devices if args.devices == "auto" else int(args.devices)
    summary = train(
        args.data,
        args.base_weight,
        args.output,
        lora_config=args.lora_config,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        accumulate_grad_batches=args.accumulate_grad_batches,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        max_length=args.max_length,
        precision=args.precision,
        seed=args.seed,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        val_batches=args.val_batches,
        save_every=args.save_every,
        keep_last=args.keep_last,
        resume=args.resume,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
        log_every=args.log_every,
        devices=devices,
    )
    best = summary.get("best_checkpoint") or "-"
    print(
        f"trained {summary['steps']} steps; final train loss {summary['final_train_loss']}, "
        f"best validation loss {summary['best_val_loss']} ({best}); "
        f"checkpoints: earliest {summary['earliest_checkpoint']}, last {summary['last_checkpoint']}"
    )
    return 0
