"""GPU benchmark: extract-vq with the full-size (S1-mini) random codec, fp32 and bf16, vs a naive loop.

Prepared for a machine with a CUDA GPU (not run on the CPU-only development machine):

1. **naive**: upstream's loop at batch 1 in fp32 (load, mix, resample on the GPU, encode, save per file);
2. **ours fp32**: `extract_vq` (DataLoader decoding, length-bucketed batches of `--batch-size`),
   float32, the precision that reproduces upstream's codes; checked identical to (1);
3. **ours bf16**: the same with bf16 autocast; reports the share of codes equal to fp32's.

Reports audio-seconds per second, ratios to the naive loop, and peak GPU memory.

    python bench/gpu_extract_vq.py                        # 64 clips of 1-12 s on cuda:0
    python bench/gpu_extract_vq.py --tiny --device cpu --clips 4   # smoke test of the script itself
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Row, report
from extract_vq import make_clips, naive_loop, npy_bytes


def _timed(fn, device) -> tuple[float, float]:
    """(seconds, peak GiB of GPU memory) for fn()."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return time.perf_counter() - start, peak


def main(
    quick: bool = False, device: str = "cuda", clips: int = 64, batch_size: int = 32, tiny: bool = False
) -> list[Row]:
    import torch

    from fish_speech.base_model.tiny import write_random_codec
    from fish_speech.codec.checkpoint import load_codec
    from fish_speech.codec.extract_vq import extract_vq
    from fish_speech.codec.model import CodecConfig

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("gpu_extract_vq: no CUDA device; nothing to do (use --device cpu --tiny for a smoke test)")
        return []
    if quick:
        clips = min(clips, 8)
    config = CodecConfig.tiny() if tiny else CodecConfig.s1_mini()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-extract-vq-") as tmp:
        tmp = Path(tmp)
        codec_path = Path(os.environ.get("BENCH_CODEC", tmp / "codec.pth"))
        if not codec_path.exists():
            write_random_codec(codec_path, config, seed=0)
        src = tmp / "src"
        src.mkdir()
        seconds = make_clips(src, clips, 1.0, 12.0)
        model = load_codec(codec_path, device=dev, encode_only=True)

        # warm-up (cuDNN autotuning, kernels, resampler kernels) on a copy, not timed
        warm = tmp / "warm"
        shutil.copytree(src, warm)
        extract_vq(warm, codec_path, batch_size=batch_size, device=device, model=model, progress=False)

        dirs = {name: tmp / name for name in ("naive", "fp32", "bf16")}
        for d in dirs.values():
            shutil.copytree(src, d)
        naive_s, naive_mem = _timed(lambda: naive_loop(dirs["naive"], model), dev)
        fp32_s, fp32_mem = _timed(
            lambda: extract_vq(
                dirs["fp32"],
                codec_path,
                batch_size=batch_size,
                num_workers=4,
                device=device,
                model=model,
                progress=False,
            ),
            dev,
        )
        bf16_s, bf16_mem = _timed(
            lambda: extract_vq(
                dirs["bf16"],
                codec_path,
                batch_size=batch_size,
                num_workers=4,
                device=device,
                model=model,
                precision="bfloat16",
                progress=False,
            ),
            dev,
        )
        same_fp32 = npy_bytes(dirs["fp32"]) == npy_bytes(dirs["naive"])
        a, b = npy_bytes(dirs["fp32"]), npy_bytes(dirs["bf16"])
        agree = [
            float(np.mean(np.load(dirs["fp32"] / k) == np.load(dirs["bf16"] / k)))
            for k in sorted(a)
            if k in b
        ]
        name = f"{config.name} codec, {clips} clips, {seconds:.0f} s audio, batch {batch_size}, {dev}"
        rows.append(
            Row(
                f"extract-vq fp32 throughput ({name})",
                seconds / fp32_s,
                seconds / naive_s,
                "audio-s/s",
                f"peak GPU {fp32_mem:.1f} GiB vs naive {naive_mem:.1f} GiB; codes identical to naive: {same_fp32}",
            )
        )
        rows.append(
            Row(
                f"extract-vq bf16 throughput ({name})",
                seconds / bf16_s,
                seconds / naive_s,
                "audio-s/s",
                f"peak GPU {bf16_mem:.1f} GiB; codes equal to fp32: {100 * np.mean(agree):.1f} %",
            )
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--tiny", action="store_true", help="tiny codec (smoke test)")
    args = parser.parse_args()
    rows = main(
        quick=args.quick, device=args.device, clips=args.clips, batch_size=args.batch_size, tiny=args.tiny
    )
    if rows:
        report("gpu_extract_vq", rows)
