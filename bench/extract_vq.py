"""Benchmark: `extract_vq` vs a naive one-file-at-a-time loop, full-size (S1-mini) random codec, CPU.

- cost per audio hour at 1x, 4x and 16x the data (1x = 2 clips of 2-5 s at 16/22.05/44.1/48 kHz, some
  stereo; 16x = 32 clips, about 2 min of audio). **ours** = `fish_speech.codec.extract_vq.extract_vq`
  (DataLoader worker decoding, length-bucketed batches, encoder-only weights); **baseline** = the same
  model object called on one file at a time in sorted order (load, mix, resample, encode, np.save), no
  workers: upstream's loop at batch size 1. Both write identical `.npy` files (checked), and the growth
  row divides the 16x cost per hour by the 1x cost per hour (1.0 = cost linear in the data).
- peak RSS: one 60 s clip at batch 1, each in a fresh process: ours (`fish-speech extract-vq`, the
  encoder-only memory-mapped load) vs the naive loop with the whole codec loaded by `torch.load`
  without mmap (as upstream does).

    python bench/extract_vq.py            # full run (~9 min on 2 cores)
    python bench/extract_vq.py --quick    # 1x and 4x of 2 short clips, 20 s clip for memory (~3 min)
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from common import Row, growth_row, report, run_python

RATES = (16000, 22050, 44100, 48000)


def make_clips(folder: Path, count: int, min_s: float, max_s: float, seed: int = 0) -> float:
    """Write `count` speech-like clips of mixed length, rate and channel count; returns total seconds."""
    rng = np.random.default_rng(seed)
    total = 0.0
    for i in range(count):
        seconds = float(rng.uniform(min_s, max_s))
        sr = RATES[i % len(RATES)]
        n = int(seconds * sr)
        t = np.arange(n) / sr
        f0 = 100 + 80 * rng.random()
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6.28) / k for k in range(1, 8))
        x = 0.3 * x * (0.5 - 0.5 * np.cos(2 * np.pi * 3 * t)) / 3 + 0.01 * rng.standard_normal(n)
        data = np.stack([x, 0.8 * x], axis=1) if i % 5 == 4 else x[:, None]
        path = folder / f"speaker{i % 3}" / f"clip{i:03d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, data.astype(np.float32), sr, subtype="PCM_16")
        total += n / sr
    return total


def naive_loop(folder: Path, model) -> None:
    """Upstream's extract_vq at batch size 1: load, mix, resample, encode, save, one file after another."""
    import torch

    from fish_speech.audio import downmix, load_audio, resample
    from fish_speech.codec.extract_vq import discover_audio

    for path in discover_audio(folder):
        wav, sr = load_audio(path)
        mono = torch.from_numpy(np.ascontiguousarray(downmix(wav)))
        audio = resample(mono, sr, 44100)
        codes, frames = model.encode(audio.view(1, 1, -1), torch.tensor([audio.shape[-1]]))
        np.save(path.with_suffix(".npy"), codes[0, :, : int(frames[0])].numpy())


def timed_run(kind: str, folder: Path, codec_path: Path) -> tuple[float, int]:
    """Run the naive loop or extract_vq on `folder` in a fresh process; (seconds after model load, files)."""
    code = (
        "import sys, time\n"
        "sys.path.insert(0, 'bench')\n"
        "from fish_speech.codec.checkpoint import load_codec\n"
        "from fish_speech.codec.extract_vq import extract_vq\n"
        "from extract_vq import naive_loop\n"
        f"model = load_codec({str(codec_path)!r}, encode_only=True)\n"
        "start = time.perf_counter()\n"
    )
    if kind == "naive":
        code += f"naive_loop(__import__('pathlib').Path({str(folder)!r}), model)\nn = -1\n"
    else:
        code += (
            f"n = extract_vq({str(folder)!r}, {str(codec_path)!r}, batch_size=16, num_workers=1, device='cpu',"
            " model=model, progress=False)['written']\n"
        )
    code += "print('ELAPSED', time.perf_counter() - start, n)\n"
    seconds, files = run_python(code, "ELAPSED")
    return float(seconds), int(files)


def npy_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.npy"))}


def peak_rss_gib(code: str) -> tuple[float, float]:
    """Peak RSS (GiB) of a fresh Python process running `code`, and of its own children (workers)."""
    probe = (
        "\nimport resource\n"
        "from bench.common import peak_rss_mib\n"
        "print('PEAK', peak_rss_mib(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    own_mib, children_kib = run_python(code + probe, "PEAK")
    return float(own_mib) / 1024, int(children_kib) / 2**20


def prepare_codec(path: Path) -> str:
    """Write a random full-size codec at `path` unless one is there; return its config name.

    In a child process, so that the benchmark runner does not keep the model's memory while the
    measured processes (its children) run.
    """
    code = (
        "import pathlib\n"
        "from fish_speech.base_model.tiny import write_random_codec\n"
        "from fish_speech.codec.checkpoint import load_codec\n"
        "from fish_speech.codec.model import CodecConfig\n"
        f"p = pathlib.Path({str(path)!r})\n"
        "if not p.exists():\n"
        "    write_random_codec(p, CodecConfig.s1_mini(), seed=0)\n"
        "print('NAME', load_codec(p, encode_only=True).config.name)\n"
    )
    return run_python(code, "NAME")[0]


def main(quick: bool = False) -> list[Row]:
    import torch

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-extract-vq-") as tmp:
        tmp = Path(tmp)
        codec_path = Path(os.environ.get("BENCH_CODEC", tmp / "codec.pth"))
        config_name = prepare_codec(codec_path)
        base_count, lo, hi = (2, 1.0, 2.0) if quick else (2, 2.0, 5.0)
        per_hour: dict[int, tuple[float, float]] = {}
        for scale in (1, 4) if quick else (1, 4, 16):
            src = tmp / f"x{scale}"
            count = base_count * scale
            seconds = make_clips(src, count, lo, hi, seed=scale)
            dirs = {name: tmp / f"{name}{scale}" for name in ("naive", "ours")}
            for d in dirs.values():
                shutil.copytree(src, d)
            # Each run in a fresh process (our process-level settings must not leak into the baseline),
            # in alternating order from one scale to the next so both see the same machine load.
            elapsed: dict[str, float] = {}
            for name in ("naive", "ours") if scale % 2 == 0 else ("ours", "naive"):
                elapsed[name], written = timed_run(name, dirs[name], codec_path)
                if name == "ours" and written != count:
                    raise RuntimeError(f"extract_vq wrote {written} of {count} files")
            if npy_bytes(dirs["ours"]) != npy_bytes(dirs["naive"]):
                raise RuntimeError(f"{scale}x: extract_vq and the naive loop wrote different codes")
            hours = seconds / 3600
            per_hour[scale] = (elapsed["ours"] / hours, elapsed["naive"] / hours)
            rows.append(
                Row(
                    f"extract-vq {scale}x ({count} clips, {seconds:.0f} s of audio, {config_name} codec,"
                    f" {torch.get_num_threads()} threads): time per audio hour",
                    per_hour[scale][0],
                    per_hour[scale][1],
                    "s/h",
                    f"lower is better; {seconds / elapsed['ours']:.2f} vs {seconds / elapsed['naive']:.2f}"
                    " audio-s/s; baseline = naive per-file loop; identical .npy",
                )
            )
            for d in (src, *dirs.values()):
                shutil.rmtree(d)
        rows.append(growth_row("extract-vq", per_hour, "naive loop"))
        clip_s = 20.0 if quick else 60.0
        long_dir = tmp / "long"
        long_dir.mkdir()
        make_clips(long_dir, 1, clip_s, clip_s + 1e-3, seed=1)
        for p in long_dir.rglob("*.wav"):  # exactly clip_s at 44.1 kHz
            sf.write(p, np.resize(sf.read(p, dtype="float32")[0], int(clip_s * 44100)), 44100)
        naive_code = (
            "import torch, numpy as np, soundfile as sf, pathlib\n"
            "from fish_speech.codec.checkpoint import infer_codec_config\n"
            "from fish_speech.codec.model import Codec\n"
            f"state = torch.load({str(codec_path)!r}, map_location='cpu', weights_only=True)\n"
            "m = Codec(infer_codec_config(state)).eval()\n"
            "m.load_state_dict({k: v for k, v in state.items() if not k.endswith('causal_mask')})\n"
            f"p = next(pathlib.Path({str(long_dir)!r}).rglob('*.wav'))\n"
            "x = torch.from_numpy(sf.read(p, dtype='float32')[0])\n"
            "m.encode(x.view(1, 1, -1))\n"
        )
        ours_code = (
            "from fish_speech.cli import main\n"
            f"main(['extract-vq', {str(long_dir)!r}, '--checkpoint-path', {str(codec_path)!r}, "
            "'--batch-size', '1', '--device', 'cpu', '--overwrite'])\n"
        )
        ours_rss, worker_rss = peak_rss_gib(ours_code)
        naive_rss, _ = peak_rss_gib(naive_code)
        rows.append(
            Row(
                f"extract-vq peak RSS, one {clip_s:.0f} s clip, batch 1",
                ours_rss,
                naive_rss,
                "GiB",
                f"lower is better; main process (decode worker: {worker_rss:.2f} GiB, mostly shared pages);"
                " baseline = whole codec via torch.load (no mmap) + encode",
            )
        )
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    report("extract_vq", main(quick=args.quick))
