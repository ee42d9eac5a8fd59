"""GPU benchmark: DualAR generation of the full-size (S1-mini) model in bf16, frames (tokens) per second.

Prepared for a machine with a CUDA GPU (`bench/gpu.sh` runs it):
1. batch 1 eager (the per-frame decode as plain PyTorch);
2. batch 1 with `--compile` (`torch.compile(decode_frame, mode="reduce-overhead")`: CUDA graphs), vs 1;
3. batch 16 eager and compiled: throughput over all rows, vs batch 1 of the same mode.
Random weights never stop by themselves (`<|im_end|>` disabled), so every row makes `--frames` frames.
Rows share the global CUDA generator (what CUDA graphs want). Upstream reports about 150 tokens/s
with compile on one RTX 4090 at batch 1.

    python bench/gpu_synthesize.py                         # full size on cuda:0
    python bench/gpu_synthesize.py --tiny --device cpu --frames 8 --no-compile   # smoke test
"""

from __future__ import annotations

import argparse
import time

from common import Row, report


def build(tiny: bool, device: str, dtype):
    import torch

    from fish_speech.text2semantic.model import DualARTransformer, ModelConfig

    config = ModelConfig.tiny() if tiny else ModelConfig.s1_mini()
    if tiny:
        config.num_codebooks, config.codebook_size, config.vocab_size = 10, 4096, 4623
    begin, end = (527, 4622) if tiny else (151658, 155753)
    with torch.device("meta"):
        model = DualARTransformer(config, begin, end)
    model = model.to_empty(device=device)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model = model.to(dtype)
    model.reset_buffers(device)
    return model.eval()


def frames_per_second(model, batch: int, frames: int, prompt_len: int, decode_fn, warmup: int = 2) -> float:
    import torch

    from fish_speech.text2semantic import generate as gen

    device = model.embeddings.weight.device
    prompt = torch.zeros(model.config.num_codebooks + 1, prompt_len, dtype=torch.long)
    prompt[0] = torch.randint(0, 1000, (prompt_len,))
    rows = [prompt] * batch
    settings = gen.SamplingSettings(max_new_tokens=frames)
    # same cache length for warm-up and the timed run, so CUDA graphs are captured once
    length = prompt_len + frames
    for _ in range(warmup):
        gen.generate(
            model, rows, gen.SamplingSettings(max_new_tokens=8), -1, decode_fn=decode_fn, cache_length=length
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    outs = gen.generate(model, rows, settings, -1, decode_fn=decode_fn, cache_length=length)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return sum(o.frames.shape[1] for o in outs) / seconds


def main(quick: bool = False, argv: list[str] | None = None) -> list[Row]:
    import torch

    from fish_speech.text2semantic import generate as gen

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--prompt-len", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    args = parser.parse_args(argv if argv is not None else [])
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_synthesize: no CUDA device; nothing measured (run it where a GPU is available)")
        return []
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = build(args.tiny, args.device, dtype)
    name = "tiny" if args.tiny else "S1-mini"
    rows: list[Row] = []
    eager1 = frames_per_second(model, 1, args.frames, args.prompt_len, None)
    eager_b = frames_per_second(model, args.batch, args.frames // 2, args.prompt_len, None, warmup=1)
    rows.append(
        Row(
            f"synthesize {name} {dtype} batch 1 eager",
            eager1,
            None,
            "frames/s",
            "upstream: ~150/s compiled on an RTX 4090",
        )
    )
    rows.append(
        Row(
            f"synthesize {name} batch {args.batch} eager",
            eager_b,
            eager1,
            "frames/s (all rows)",
            "baseline: batch 1 eager",
        )
    )
    if args.compile:
        fn = gen.compiled_decode_frame()
        start = time.perf_counter()
        comp1 = frames_per_second(model, 1, args.frames, args.prompt_len, fn, warmup=3)
        compile_s = time.perf_counter() - start
        rows.append(
            Row(
                f"synthesize {name} batch 1 --compile (CUDA graphs)",
                comp1,
                eager1,
                "frames/s",
                f"baseline: batch 1 eager; compile + warm-up {compile_s:.0f} s",
            )
        )
        comp_b = frames_per_second(model, args.batch, args.frames // 2, args.prompt_len, fn, warmup=2)
        rows.append(
            Row(
                f"synthesize {name} batch {args.batch} --compile",
                comp_b,
                comp1,
                "frames/s (all rows)",
                "baseline: batch 1 compiled",
            )
        )
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append(Row(f"synthesize {name} peak GPU memory", peak, None, "GiB", f"batch {args.batch}, bf16"))
    return rows


if __name__ == "__main__":
    import sys

    report("gpu_synthesize", main(argv=sys.argv[1:]))
