"""Benchmark: `fish-speech evaluate` of 3 candidates (base + 2 checkpoints) × 8 sentences, tiny models, CPU.

Baseline, same run: synthesizing the same 24 utterances alone (same voice, LoRA, prompts, batch size),
so the ratio is what the scoring (ASR and speaker models, real clips, reports) adds to generation.
A second row compares evaluation at --batch-size 8 with --batch-size 1. Set-up (tiny base, the demo
voice with random codes, a 4-step training run) is not timed. `python bench/evaluate.py [--quick]`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Row, report


def _setup(root: Path) -> dict:
    import numpy as np

    from fish_speech.dataset.build_dataset import build_dataset
    from fish_speech.text2semantic.train import train
    from fish_speech.tiny import write_tiny_checkpoint

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
        max_steps=4,
        save_every=2,
        batch_size=2,
        max_length=512,
        num_workers=0,
        log_every=1,
        learning_rate=1e-3,
        val_fraction=0.5,  # 4 held out per speaker: 8
    )
    return {"base": base, "data": data, "train": root / "train", "models": root / "models"}


def _evaluate(s: dict, out: Path, batch_size: int, max_new: int) -> tuple[float, dict]:
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
            asr="tiny",
            speaker_model="tiny",
            model_cache=str(s["models"]),
            device="cpu",
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
    voice = load_voice(s["base"], device="cpu")
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
    return time.perf_counter() - t


def main(quick: bool = False) -> list[Row]:
    import torch

    torch.set_num_threads(1)
    max_new = 32 if quick else 96
    with tempfile.TemporaryDirectory(prefix="bench-evaluate-") as tmp:
        root = Path(tmp)
        s = _setup(root)
        _evaluate(s, root / "warm", 8, 8)  # model fetch/caches and first-call costs out of the timings
        seconds, result = _evaluate(s, root / "eval", 8, max_new)
        bare = _synthesize_only(s, result, 8, max_new)
        single, _ = _evaluate(s, root / "eval1", 1, max_new)
        n = len(result["utterances"]) * (len(result["candidates"]) - 1)
        html = (root / "eval" / "report.html").stat().st_size / 1e6
    note = f"{n} utterances (3 candidates x 8 sentences), <= {max_new} frames each; report {html:.2f} MB"
    return [
        Row("evaluate, tiny, CPU (vs synthesis alone)", seconds, bare, "s", note),
        Row("evaluate --batch-size 8 (vs --batch-size 1)", seconds, single, "s", "same run, same utterances"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report("evaluate", main(quick=args.quick))
    sys.exit(0)
