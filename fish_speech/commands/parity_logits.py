"""`fish-speech parity-logits`: the logits a checkpoint gives on a saved batch, as upstream's parity script writes them."""

from __future__ import annotations

import argparse

HELP = (
    "write OUT.npy, OUT.codebook.npy, OUT.generate.npy and OUT.hidden.npy for a batch (inputs, labels, "
    "mask .npy), to compare logits with upstream's on any checkpoint"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "checkpoint_dir", metavar="CKPT", help="checkpoint folder (model.pth, config.json, ...)"
    )
    parser.add_argument("inputs", metavar="INPUTS.npy", help="token ids, (batch, codebooks + 1, length)")
    parser.add_argument("out", metavar="OUT.npy", help="token logits; the other outputs get suffixes")
    parser.add_argument("--labels", required=True, metavar="LABELS.npy")
    parser.add_argument("--attention-mask", metavar="MASK.npy")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")


def run(args: argparse.Namespace) -> int:
    import logging

    import numpy as np
    import torch

    from fish_speech.devices import resolve_device
    from fish_speech.fileio import atomic_path
    from fish_speech.text2semantic.checkpoint import load_model, reference_outputs

    device = resolve_device(args.device)
    model = load_model(args.checkpoint_dir, device=device, dtype=getattr(torch, args.dtype))

    def load(path: str) -> torch.Tensor:
        return torch.from_numpy(np.load(path)).to(device)

    mask = load(args.attention_mask) if args.attention_mask else None
    outs = reference_outputs(model, load(args.inputs), load(args.labels), mask)
    stem = args.out.removesuffix(".npy")
    for suffix, value in outs.items():
        with atomic_path(f"{stem}{suffix}.npy", suffix=".npy") as tmp:
            np.save(tmp, value.numpy())
        logging.getLogger(__name__).info("wrote %s%s.npy %s", stem, suffix, tuple(value.shape))
    return 0
