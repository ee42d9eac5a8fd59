"""Benchmark: `fish-speech evaluate` of N candidates (base + checkpoints) × 8 sentences.

CPU (`make bench`): 3 candidates, tiny models. `--gpu` (bench/gpu.sh): 6 candidates on CUDA with random
weights of the real sizes: S1-mini and its codec, Whisper large-v3-turbo's shape, WavLM base-plus-sv's
shape (nothing is downloaded; random models never stop early, so every sentence runs to its frame cap:
an upper bound). Aim on one large GPU: under 5 minutes.

Baseline, same run: synthesizing the same utterances alone (same voice, LoRA, prompts, batch size),
so the ratio is what the scoring (ASR and speaker models, real clips, reports) adds to generation.
The CPU run adds --batch-size 8 vs --batch-size 1. Set-up (base, the demo voice with random codes, a
short training run) is not timed.  `python bench/evaluate.py [--quick] [--gpu]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Row, report


def _setup(root: Path, gpu: bool = False) -> dict:
    import numpy as np

    from fish_speech.base_model.tiny import write_tiny_checkpoint
    from fish_speech.dataset.build_dataset import build_dataset
    from fish_speech.text2semantic.train import train

    models = root / "models"
    if gpu:
        from fish_speech.base_model.tiny import write_random_codec, write_random_t2s
        from fish_speech.codec.model import CodecConfig
        from fish_speech.evaluate import models as m
        from fish_speech.text2semantic.model import ModelConfig

        base = write_random_t2s(root / "base", ModelConfig.s1_mini())
        write_random_codec(base / "codec.pth", CodecConfig.s1_mini(), seed=0)
        m.write_tiny_asr(models / "asr", **m.LARGE_V3_TURBO)
        m.write_tiny_speaker_model(models / "speaker", **m.WAVLM_BASE_PLUS_SV)
    else:
        base = write_tiny_checkpoint(root / "base")
    data = root / "data"
    shutil.copytree(REPO / "examples" / "demo-voice", data)
    rng = np.random.default_rng(0)
    for i, lab in enumerate(sorted(data.rglob("*.lab"))):
        np.save(lab.with_suffix(".npy"), rng.integers(0, 1024, size=(10, 40 + 5 * i)).astype(np.int64))
    build_dataset([data], root / "protos", num_workers=1)
    train(
        root / "protos",
        base,
        root / "train",
        max_steps=5 if gpu else 4,  # checkpoints: 5 (GPU) or 2 (CPU), plus the base model
        save_every=1 if gpu else 2,
        keep_last=0,
        batch_size=2,
        max_length=512,
        num_workers=0,
        log_every=1,
        learning_rate=1e-3,
        val_fraction=0.5,  # 4 held out per speaker: 8 sentences
    )
    return {
        "base": base,
        "data": data,
        "train": root / "train",
        "models": models,
        "asr": str(models / "asr") if gpu else "tiny",
        "speaker": str(models / "speaker") if gpu else "tiny",
        "device": "cuda" if gpu else "cpu",
    }


def _evaluate(s: dict, out: Path, batch_size: int, max_new: int | None) -> tuple[float, dict]:
    from fish_speech.evaluate.run import EvalOptions, evaluate

    t = time.perf_counter()
    result = evaluate(
        EvalOptions(
            base_weight=str(s["base"]),
            train_output=str(s["train"]),
            data=str(s["data"]),
            output=str(out),
            checkpoints="all",
            sentences=8,
            asr=s["asr"],
            speaker_model=s["speaker"],
            model_cache=str(s["models"]),
            device=s["device"],
            batch_size=batch_size,
            max_new_tokens=max_new,
            overwrite=True,
        )
    )
    return time.perf_counter() - t, result


def _synthesize_only(s: dict, result: dict, batch_size: int, max_new: int) -> float:
    """The same generation without any scoring: the baseline."""
    import numpy as np

    from fish_speech.dataset.build_dataset import clean_build_text
    from fish_speech.evaluate.sentences import read_train_summary
    from fish_speech.synthesis import apply_lora, load_voice, synthesize
    from fish_speech.text2semantic.generate import SamplingSettings
    from fish_speech.text2semantic.prompt import Reference

    t = time.perf_counter()
    voice = load_voice(s["base"], device=s["device"])
    settings = SamplingSettings(max_new_tokens=max_new)
    lora = read_train_summary(s["train"])["options"]["lora_config"]
    by_speaker: dict[str, list[tuple[int, str, str]]] = {}
    for i, u in enumerate(result["utterances"]):
        by_speaker.setdefault(u["speaker"], []).append((i, u["text"], u["prompt_clip"]))
    for c in result["candidates"]:
        if c["name"] == "real":
            continue
        if c["step"] is not None:
            apply_lora(voice, Path(s["train"]) / "checkpoints" / f"{c['name']}.ckpt", lora_config=lora)
        for rows in by_speaker.values():
            prompt = Path(rows[0][2])
            text = clean_build_text(prompt.with_suffix(".lab").read_text(encoding="utf-8")).strip()
            ref = Reference(text, np.load(prompt).astype(np.int64), str(prompt))
            synthesize(
                voice,
                [r[1] for r in rows],
                [ref],
                settings,
                seed=[42 + r[0] for r in rows],
                batch_size=batch_size,
                max_chars=0,
            )
    if voice.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(quick: bool = False, gpu: bool = False) -> list[Row]:
    import torch

    if gpu and not torch.cuda.is_available():
        print("bench/evaluate.py --gpu: no CUDA device; nothing to do")
        return []
    if not gpu:
        torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        s = _setup(root, gpu)
        _evaluate(s, root / "warm", 8, 8)  # model loads, kernels and first-call costs out of the timings
        max_new = None if gpu else (32 if quick else 96)  # GPU: the command's default cap
        seconds, result = _evaluate(s, root / "eval", 8, max_new)
        cap = result["options"]["max_new_tokens"]
        bare = _synthesize_only(s, result, 8, cap)
        n = len(result["utterances"]) * (len(result["candidates"]) - 1)
        html = (root / "eval" / "report.html").stat().st_size / 1e6
        note = (
            f"{n} utterances ({len(result['candidates']) - 1} candidates x {len(result['utterances'])} "
            f"sentences), <= {cap} frames each; report {html:.2f} MB"
        )
        if gpu:
            name = torch.cuda.get_device_name(0)
            return [
                Row(
                    f"evaluate, S1-mini + default model sizes, {name} (vs synthesis alone)",
                    seconds,
                    bare,
                    "s",
                    note + f"; aim: < 300 s; scoring {result['timing']}",
                )
            ]
        single, _ = _evaluate(s, root / "eval1", 1, max_new)
    return [
        Row("evaluate, tiny, CPU (vs synthesis alone)", seconds, bare, "s", note),
        Row("evaluate --batch-size 8 (vs --batch-size 1)", seconds, single, "s", "same run, same utterances"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="full-size random models on CUDA (bench/gpu.sh)")
    args = parser.parse_args()
    rows = main(quick=args.quick, gpu=args.gpu)
    if rows:
        report("gpu_evaluate" if args.gpu else "evaluate", rows)
    sys.exit(0)
