"""Synthesis speed on CPU: full-size (S1-mini) random weights, float32, DualAR generation with KV caches.

Rows (each side measured in a fresh process, in the same run):
1. frames/s at batch 1 (ours, KV cache) vs recomputing the whole sequence per frame (no cache, the
   textbook baseline; `forward_generate` + the fast transformer over the frame);
2. real-time factor at batch 1: compute seconds per second of audio (one frame = 2048 / 44100 s);
   below 1 is faster than real time;
Rates are of the decode steps after the prefill (the prefill time is in the notes).
3. batch 8 vs batch 1 throughput (frames/s over all rows);
4. peak resident memory at batch 1 vs the float32 weights alone.
Random weights never stop by themselves: `<|im_end|>` is disabled so every row makes the same number of
frames. The codec decoder is not included (bench/extract_vq.py covers the codec).

    python bench/synthesize.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from common import Row, report, run_python

FRAME_SECONDS = 2048 / 44100


def _child(batch: int, frames: int, prompt_len: int, cache: bool, tiny: bool) -> dict:
    import torch

    from fish_speech.text2semantic import generate as gen
    from fish_speech.text2semantic.model import DualARTransformer, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig.tiny() if tiny else ModelConfig.s1_mini()
    if tiny:
        config.num_codebooks, config.codebook_size, config.vocab_size = 10, 4096, 4623
        begin, end = 527, 4622
    else:
        begin, end = 151658, 155753
    with torch.device("meta"):
        model = DualARTransformer(config, begin, end)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.reset_buffers("cpu")
    model.eval()
    weights_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    prompt = torch.zeros(config.num_codebooks + 1, prompt_len, dtype=torch.long)
    prompt[0] = torch.randint(0, 1000, (prompt_len,))
    settings = gen.SamplingSettings(max_new_tokens=frames)
    rows = [prompt] * batch

    prefill_s = None
    if cache:
        gen.generate(model, rows, gen.SamplingSettings(max_new_tokens=2), -1)  # warm-up
        marks: list[float] = []
        start = time.perf_counter()
        outs = gen.generate(
            model,
            rows,
            settings,
            -1,
            gen.seeded_generators([0] * batch),
            progress=lambda n: marks.append(time.perf_counter()),
        )
        # steady state: decode steps 2.. (step 1 carries the prefill), all rows
        seconds = marks[-1] - marks[0]
        made = batch * (len(marks) - 1)
        prefill_s = marks[0] - start
        assert all(o.frames.shape[1] == frames for o in outs)
    else:
        seconds, made = _no_cache(model, prompt, frames)
    from common import peak_rss_mib

    return {
        "seconds": seconds,
        "frames": made,
        "prefill_s": prefill_s,
        "peak_mib": peak_rss_mib(),
        "weights_mib": weights_mib,
    }


def _no_cache(model, prompt, frames: int) -> tuple[float, int]:
    """Baseline: every frame re-runs the slow transformer over the whole sequence, then the fast one."""
    import torch

    from fish_speech.text2semantic import generate as gen

    c = model.config
    params = tuple(torch.tensor(v) for v in (0.8, 0.8, 1.1))
    seq = prompt[None].clone()
    marks = []
    with torch.inference_mode():
        for _ in range(frames):
            marks.append(time.perf_counter())
            logits, hidden = model.forward_generate(seq)
            token = gen.sample(logits[:, -1], None, params, None)
            codes = torch.zeros(1, c.num_codebooks, dtype=torch.long)
            codes[:, 0] = (token - model.semantic_begin_id).clamp_min(0)
            for k in range(1, c.num_codebooks):
                x = torch.cat([hidden[:, -1:], model.fast_embeddings(codes[:, : c.num_codebooks - 1])], dim=1)
                for block in model.fast_layers:
                    x = block(x, model.fast_freqs_cis[: x.size(1)], None)
                codes[:, k] = gen.sample(
                    model.fast_output(model.fast_norm(x))[:, k, :1024], None, params, None
                )
            frame = torch.cat([token[:, None], codes], dim=1)
            seq = torch.cat([seq, frame[:, :, None]], dim=2)
    marks.append(time.perf_counter())
    return marks[-1] - marks[1], frames - 1  # frames after the first (the prefill-sized one)


def _measure(batch: int, frames: int, prompt_len: int, cache: bool, tiny: bool) -> dict:
    code = (
        "import sys, json; sys.path.insert(0, 'bench'); import synthesize as s; "
        f"print('RESULT', json.dumps(s._child({batch}, {frames}, {prompt_len}, {cache}, {tiny})))"
    )
    return json.loads(" ".join(run_python(code, "RESULT")))


def main(quick: bool = False, tiny: bool = False) -> list[Row]:
    frames = 6 if quick else 16
    prompt_len = 64 if quick else 200  # a short reference + text prompt
    one = _measure(1, frames, prompt_len, True, tiny)
    base = _measure(1, max(frames // 4, 3), prompt_len, False, tiny)
    eight = _measure(8, frames, prompt_len, True, tiny)
    fps1 = one["frames"] / one["seconds"]
    fps_base = base["frames"] / base["seconds"]
    fps8 = eight["frames"] / eight["seconds"]
    size = "tiny" if tiny else "S1-mini"
    return [
        Row(
            f"synthesize {size} fp32 CPU: frames/s at batch 1",
            fps1,
            fps_base,
            "frames/s",
            f"decode steps after the prefill; baseline: no KV cache (whole sequence per frame); prompt {prompt_len} "
            f"tokens, {frames} frames; prefill {one['prefill_s']:.1f} s",
        ),
        Row(
            f"synthesize {size} fp32 CPU: real-time factor at batch 1",
            1 / (fps1 * FRAME_SECONDS),
            1.0,
            "s compute / s audio",
            "decode steps; baseline: real time (below 1 = faster than real time); no prefill, no codec decode",
        ),
        Row(
            f"synthesize {size} fp32 CPU: throughput at batch 8",
            fps8,
            fps1,
            "frames/s (all rows)",
            f"decode steps; baseline: batch 1; rows equal their batch-1 results; prefill {eight['prefill_s']:.1f} s",
        ),
        Row(
            f"synthesize {size} fp32 CPU: peak memory at batch 1",
            one["peak_mib"],
            one["weights_mib"],
            "MiB",
            f"baseline: float32 weights alone; batch 8 peak {eight['peak_mib']:.0f} MiB",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    args = parser.parse_args()
    report("synthesize", main(args.quick, args.tiny))
    sys.exit(0)
