"""GPU benchmark: LoRA training of the full-size (S1-mini) model, bf16, tokens/s and MFU.

Prepared for a machine with a CUDA GPU (it does nothing without one unless `--device cpu`):

1. **ours**: bf16-mixed (bf16 base weights, fp32 adapters, autocast), gradient checkpointing per block
   as in config.json, fused AdamW, at the largest batch of `--batches` that fits (4096-token samples);
2. **baseline**: upstream's fine-tuning settings, `bf16-true` (base and adapters in bf16), batch 4;
3. **full fine-tuning** (`train --mode full`): every weight trainable, fp32 master weights and AdamW
   state, bf16-mixed autocast, batch 4, vs the LoRA step (1) at batch 4 in the same run;
4. **loop**: the real `fish_speech.text2semantic.train.train` (Lightning, data pipeline, metrics,
   checkpoints) on synthetic protos with a random full-size checkpoint, vs the raw step of (1) at the
   same batch: the cost of everything around the step.

MFU = model FLOPs per second / the GPU's dense bf16 peak (H100/H200 989, A100 312, L40S 362, L4 121
TFLOP/s; `--peak-tflops` otherwise). Model FLOPs per token follow the usual 6·N + attention count, with
N the parameters that act on the token (slow transformer and output head once, the fast transformer
once per codebook), not counting recomputation from checkpointing.

    python bench/gpu_train.py                 # full size on cuda:0
    python bench/gpu_train.py --tiny --device cpu --batches 1,2 --steps 1 --seq-len 256   # smoke test
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import tempfile
import time
from pathlib import Path

from common import Row, report

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def flops_per_token(config, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward = 3 × forward), all positions audio frames."""
    c = config
    slow_block = c.dim * (c.n_head + 2 * c.n_local_heads) * c.head_dim + c.n_head * c.head_dim * c.dim
    slow_block += 3 * c.dim * c.intermediate_size
    fast_block = c.fast_dim * (c.fast_n_head + 2 * c.fast_n_local_heads) * c.fast_head_dim
    fast_block += c.fast_n_head * c.fast_head_dim * c.fast_dim + 3 * c.fast_dim * c.fast_intermediate_size
    matmul_params = c.n_layer * slow_block + c.dim * c.vocab_size  # slow blocks + output head
    matmul_params += c.num_codebooks * (c.n_fast_layer * fast_block + c.fast_dim * c.codebook_size)
    # attention scores and weighted sum: 2 matmuls of 2·T·head_dim per head, causal ≈ half
    attention = c.n_layer * c.n_head * c.head_dim * 2 * seq_len
    attention += c.num_codebooks * c.n_fast_layer * c.fast_n_head * c.fast_head_dim * 2 * c.num_codebooks
    return 6.0 * matmul_params + 3.0 * attention


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


def build(config, device, base_dtype, lora_dtype, full: bool = False):
    import torch

    from fish_speech.text2semantic.lora import resolve_lora_spec, setup_lora
    from fish_speech.text2semantic.model import DualARTransformer
    from fish_speech.text2semantic.training.module import prepare_full_finetuning

    semantic_begin = config.vocab_size - 4096 - 22 if config.vocab_size > 100_000 else 527
    torch.manual_seed(0)
    with torch.device(device):
        model = DualARTransformer(config, semantic_begin, semantic_begin + 4095)
    model.to(base_dtype).train()
    if full:
        prepare_full_finetuning(model)
        return model, list(model.parameters()), semantic_begin
    setup_lora(model, resolve_lora_spec())
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.to(lora_dtype)
    return model, params, semantic_begin


def measure_step(config, device, batch: int, seq_len: int, steps: int, mode: str) -> dict:
    """tokens/s and peak memory of the raw step in `mode`: LoRA 'bf16-mixed' or 'bf16-true', or
    'full-bf16-mixed' (full fine-tuning: fp32 master weights, bf16 autocast)."""
    import torch
    from train import synthetic_batch  # bench/train.py

    from fish_speech.text2semantic.loss import dual_ar_loss

    mixed = mode in ("bf16-mixed", "full-bf16-mixed")
    if mode == "full-bf16-mixed":
        model, params, begin = build(config, device, torch.float32, torch.float32, full=True)
    else:
        model, params, begin = build(
            config, device, torch.bfloat16, torch.float32 if mixed else torch.bfloat16
        )
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-5, fused=cuda)
    data = {k: v.to(device) for k, v in synthetic_batch(config, batch, seq_len, begin).items()}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
            token_logits, codebook_logits = model(data["inputs"], data["labels"], None)
            out = dual_ar_loss(token_logits, codebook_logits, data["labels"], begin, begin + 4095)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        step()
        step()  # warm-up: allocator, kernels, optimizer state
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")
        return {
            "batch": batch,
            "tokens_per_s": batch * seq_len * steps / elapsed,
            "peak_gib": peak,
            "ok": True,
        }
    except torch.OutOfMemoryError:
        return {"batch": batch, "ok": False}


def measure_loop(config, batch: int, seq_len: int, steps: int) -> dict:
    """End-to-end `train()` (Lightning) on synthetic protos with a random full-size checkpoint."""
    import numpy as np

    from fish_speech.base_model.tiny import write_random_t2s
    from fish_speech.dataset.protos import Semantics, Sentence, TextData, write_protos
    from fish_speech.text2semantic.train import train

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_random_t2s(tmp / "base", config=config, seed=0)
        rng = np.random.default_rng(0)
        frames = seq_len // 4
        groups = []
        for g in range(2):
            sentences = []
            for i in range(12):
                codes = rng.integers(0, min(config.codebook_size, 1024), (config.num_codebooks, frames))
                sentences.append(
                    Sentence(
                        texts=[f"Sentence {i} of speaker {g}."],
                        semantics=[Semantics(values=r) for r in codes],
                    )
                )
            groups.append(TextData(source="folder", name=f"spk{g}", sentences=sentences))
        write_protos(groups, tmp / "protos")
        summary = train(
            tmp / "protos",
            tmp / "base",
            tmp / "out",
            max_steps=steps + 2,
            batch_size=batch,
            max_length=seq_len,
            save_every=steps + 2,
            log_every=1,
            num_workers=min(4, os.cpu_count() or 1),
            val_batches=1,
        )
        rows = json.loads((tmp / "out" / "metrics.json").read_text())["train"][2:]  # past warm-up
        return {
            "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in rows])),
            "precision": summary["precision"],
        }


def release(device) -> None:
    """Free the last measurement's memory before the next one."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(quick: bool = False, argv: list[str] | None = None) -> list[Row]:
    import torch

    from fish_speech.text2semantic.model import ModelConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny config (smoke test of this script)")
    parser.add_argument("--seq-len", type=int, default=4096)
    parser.add_argument("--batches", default="1,2,4,8,12,16,24,32", help="batch sizes to try, ascending")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--no-loop", action="store_true", help="skip the end-to-end train() measurement")
    args = parser.parse_args(argv if argv is not None else [])
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_train: no CUDA device; nothing measured (run it where a GPU is available)")
        return []
    config = ModelConfig.tiny() if args.tiny else ModelConfig.s1_mini()
    if args.tiny:
        config = dataclasses.replace(config, num_codebooks=10, codebook_size=4096)
    config.max_seq_len = max(config.max_seq_len, args.seq_len)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = peak_tflops(name, args.peak_tflops)
    per_token = flops_per_token(config, args.seq_len)

    results = []
    for batch in (int(b) for b in args.batches.split(",")):
        r = measure_step(config, device, batch, args.seq_len, args.steps, "bf16-mixed")
        release(device)
        print(json.dumps(r))
        if not r["ok"]:
            break
        results.append(r)
        if (
            device.type == "cuda"
            and r["peak_gib"] > 0.9 * torch.cuda.get_device_properties(device).total_memory / 2**30
        ):
            break
    if not results:
        raise RuntimeError("not even the smallest batch fits")
    best = max(results, key=lambda r: r["tokens_per_s"])
    base = measure_step(config, device, 4, args.seq_len, args.steps, "bf16-true")
    release(device)
    print(json.dumps(base))

    lora4 = next((r for r in results if r["batch"] == 4), None)
    if lora4 is None:
        lora4 = measure_step(config, device, 4, args.seq_len, args.steps, "bf16-mixed")
        release(device)
    full4 = measure_step(config, device, 4, args.seq_len, args.steps, "full-bf16-mixed")
    release(device)
    print(json.dumps(full4))

    def mfu(tokens_per_s: float) -> float:
        return tokens_per_s * per_token / (peak * 1e12) if peak else math.nan

    note = f"{name}, {args.seq_len}-token samples"
    rows = [
        Row(
            f"LoRA step, bf16-mixed batch {best['batch']} (baseline: upstream bf16-true batch 4)",
            best["tokens_per_s"],
            base.get("tokens_per_s"),
            "tokens/s",
            note,
        ),
        Row(
            "MFU (baseline: upstream bf16-true batch 4)",
            mfu(best["tokens_per_s"]),
            mfu(base["tokens_per_s"]) if base.get("ok") else None,
            "fraction",
            f"{per_token / 1e9:.2f} GFLOP/token, peak {peak} TFLOP/s",
        ),
        Row(
            f"peak memory, batch {best['batch']} (baseline: batch 4 bf16-true)",
            best["peak_gib"],
            base.get("peak_gib"),
            "GiB",
            note,
        ),
    ]
    rows += [
        Row(
            "full fine-tuning step, bf16-mixed batch 4 (baseline: LoRA bf16-mixed batch 4)",
            full4.get("tokens_per_s", math.nan),
            lora4.get("tokens_per_s"),
            "tokens/s",
            note + ("" if full4["ok"] else "; full fine-tuning did not fit"),
        ),
        Row(
            "full fine-tuning peak memory, batch 4 (baseline: LoRA bf16-mixed batch 4)",
            full4.get("peak_gib", math.nan),
            lora4.get("peak_gib"),
            "GiB",
            "fp32 master weights + AdamW state + gradients",
        ),
    ]
    if not args.no_loop:
        loop = measure_loop(config, best["batch"], args.seq_len, args.steps)
        rows.append(
            Row(
                f"train() loop, batch {best['batch']} (baseline: raw step)",
                loop["tokens_per_s"],
                best["tokens_per_s"],
                "tokens/s",
                f"Lightning, {loop['precision']}, data pipeline, metrics",
            )
        )
    return rows


if __name__ == "__main__":
    import sys

    rows = main(argv=sys.argv[1:])
    if rows:
        report("gpu_train", rows)
