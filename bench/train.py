"""Benchmark: tokens/s and memory of one training step (forward, loss, backward, AdamW), on the CPU.

Three sizes, each against a baseline measured in the same run:
- tiny config (the golden vectors' model) and a mid-size config (S1-mini's vocabulary and codebooks,
  6 + 2 narrower layers, 84 M parameters): a full fine-tuning step (`train --mode full`: every weight
  trainable, fp32 master weights and AdamW state) vs the LoRA step (`--mode lora`, r_8_alpha_16);
- full size (S1-mini's config, random weights, fp32): the LoRA step with per-block gradient
  checkpointing (config.json's `use_gradient_checkpointing`) vs the same step without it. Full-size
  full fine-tuning (about 14 GB with AdamW) is measured on a GPU only (bench/gpu_train.py).

Every configuration runs in its own process so that its peak resident memory is its own. "training
memory" = peak RSS minus the RSS once the model is built (activations, gradients, optimizer state).
Batches are synthetic audio-only sequences (every position a semantic frame, the costly case: the fast
transformer runs at every position). `python bench/train.py [--quick]` (quick: tiny only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import REPO, Row, peak_rss_mib, report

SIZES = {
    # name: (config, batch, seq_len, timed steps)
    "tiny": ("tiny", 4, 512, 5),
    "mid": ("mid", 2, 256, 2),
    "full": ("s1_mini", 1, 128, 2),
}


def mid_config():
    """S1-mini's vocabulary, codebooks and layer kinds, at 6 slow + 2 fast layers of width 512."""
    import dataclasses

    from fish_speech.text2semantic.model import ModelConfig

    return dataclasses.replace(
        ModelConfig.s1_mini(),
        vocab_size=32768,
        n_layer=6,
        n_head=8,
        n_local_heads=4,
        head_dim=64,
        dim=512,
        intermediate_size=1536,
        n_fast_layer=2,
        fast_dim=512,
        fast_n_head=8,
        fast_n_local_heads=4,
        fast_head_dim=64,
        fast_intermediate_size=1536,
    )


def synthetic_batch(config, batch: int, seq_len: int, semantic_begin: int, seed: int = 0):
    """Inputs/labels where every position is an audio frame (codes below the codebook size)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    c = config.num_codebooks
    codes = torch.randint(0, min(config.codebook_size, 4096), (batch, c, seq_len + 1), generator=gen)
    inputs = torch.empty(batch, c + 1, seq_len, dtype=torch.long)
    labels = torch.empty_like(inputs)
    inputs[:, 0] = semantic_begin + codes[:, 0, :-1]
    inputs[:, 1:] = codes[:, :, :-1]
    labels[:, 0] = semantic_begin + codes[:, 0, 1:]
    labels[:, 1:] = codes[:, :, 1:]
    return {
        "inputs": inputs,
        "labels": labels,
        "attention_masks": torch.zeros(batch, seq_len, dtype=torch.bool),
    }


def worker(size: str, mode: str) -> dict:
    """One measurement (run in a child process): build, warm up one step, time the rest."""
    import torch

    from fish_speech.text2semantic.lora import count_trainable, resolve_lora_spec, setup_lora
    from fish_speech.text2semantic.loss import dual_ar_loss
    from fish_speech.text2semantic.model import DualARTransformer, ModelConfig

    config_name, batch, seq_len, steps = SIZES[size]
    config = mid_config() if config_name == "mid" else getattr(ModelConfig, config_name)()
    config.use_gradient_checkpointing = mode != "lora-no-ckpt"
    semantic_begin = config.vocab_size - 4096 - 22 if config_name != "tiny" else 527
    torch.manual_seed(0)
    model = DualARTransformer(config, semantic_begin, semantic_begin + 4095)
    model.train()
    if mode == "full":
        from fish_speech.text2semantic.training.module import prepare_full_finetuning

        prepare_full_finetuning(model)
        params = list(model.parameters())
    else:
        setup_lora(model, resolve_lora_spec())
        params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-5)
    data = synthetic_batch(config, batch, seq_len, semantic_begin)
    rss_built = peak_rss_mib()

    def step() -> None:
        token_logits, codebook_logits = model(data["inputs"], data["labels"], data["attention_masks"])
        out = dual_ar_loss(
            token_logits, codebook_logits, data["labels"], semantic_begin, semantic_begin + 4095
        )
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up (allocations, optimizer state)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": batch * seq_len * steps / elapsed,
        "step_s": elapsed / steps,
        "peak_rss_mb": peak_rss_mib(),
        "training_mb": peak_rss_mib() - rss_built,
        "trainable": count_trainable(model) if mode != "full" else sum(p.numel() for p in params),
        "batch": batch,
        "seq_len": seq_len,
    }


def run_worker(size: str, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", size, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {size}/{mode} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(quick: bool = False) -> list[Row]:
    rows: list[Row] = []
    pairs = [("tiny", "full", "lora", "full fine-tuning", "LoRA")]
    if not quick:
        pairs.append(("mid", "full", "lora", "full fine-tuning", "LoRA"))
        pairs.append(("full", "lora", "lora-no-ckpt", "LoRA", "no gradient checkpointing"))
    for size, ours_mode, base_mode, ours_name, base_name in pairs:
        ours, base = run_worker(size, ours_mode), run_worker(size, base_mode)
        shape = (
            f"batch {ours['batch']} × {ours['seq_len']} tokens, "
            f"{ours['trainable']:,} vs {base['trainable']:,} trainable"
        )
        rows.append(
            Row(
                f"{size}: {ours_name} step tokens/s (baseline: {base_name})",
                ours["tokens_per_s"],
                base["tokens_per_s"],
                "tokens/s",
                shape,
            )
        )
        rows.append(
            Row(
                f"{size}: {ours_name} step training memory (baseline: {base_name})",
                ours["training_mb"],
                base["training_mb"],
                "MB",
                f"peak RSS {ours['peak_rss_mb']:.0f} vs {base['peak_rss_mb']:.0f} MB",
            )
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny config only")
    parser.add_argument("--worker", nargs=2, metavar=("SIZE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
    else:
        report("train", main(quick=args.quick))
