"""Extract VQ codes for every clip under a folder: `<stem>.npy` (int64, (10, frames)) beside each clip.

Same codes as upstream's `tools/vqgan/extract_vq.py` (its per-file preprocessing and output), organised for throughput
and robustness:
- files are sorted and sharded deterministically (files[I::N]); finished `.npy` are skipped unless
  `overwrite`; every `.npy` is written atomically, so a killed run leaves no partial file;
- DataLoader workers decode and mono-mix audio while the model runs; resampling to 44.1 kHz runs on
  the model's device;
- clips are grouped into length-bucketed batches (few padded samples, a cap on samples per batch);
  zero padding on the right never changes a clip's codes because every layer is causal;
- clips longer than upstream's 190.2 s limit are encoded in overlapping windows (`Codec.encode`);
- empty, corrupt, unreadable or non-finite files are skipped with a recorded reason.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from fish_speech import audio as audio_lib
from fish_speech.codec.checkpoint import check_codec_file, load_codec
from fish_speech.codec.model import Codec
from fish_speech.codec.options import SAMPLE_RATE, ExtractOptions
from fish_speech.dataset.discover import find_audio_files
from fish_speech.devices import resolve_device
from fish_speech.errors import UserError
from fish_speech.fileio import atomic_path

log = logging.getLogger(__name__)


def discover_audio(root: Path) -> list[Path]:
    """Sorted audio files under `root` (the dataset module's discovery rule)."""
    return sorted((Path(p) for p in find_audio_files(root)), key=lambda p: p.as_posix())


@dataclass
class EncodeJob:
    path: Path
    output: Path
    samples_44k: int  # from the header; exact length is known after decoding
    seconds: float


def _skip(skipped: list[dict], path: Path, reason: str) -> None:
    log.warning("skip %s: %s", path, reason)
    skipped.append({"path": str(path), "reason": reason})


def codes_path(clip: Path, data_dir: Path, output_dir: Path | None) -> Path:
    """Where a clip's codes go: `<stem>.npy` beside it, or at the same relative path under `output_dir`."""
    if output_dir is None:
        return clip.with_suffix(".npy")
    return output_dir / clip.relative_to(data_dir).with_suffix(".npy")


def plan_clips(
    files: list[Path],
    overwrite: bool,
    skipped: list[dict],
    data_dir: Path | None = None,
    output_dir: Path | None = None,
) -> tuple[list[EncodeJob], list[Path]]:
    """Split `files` into clips to encode and finished ones; record empty files and name clashes.

    Codes go beside each clip, or under `output_dir` at the clip's path relative to `data_dir`.
    """
    todo: list[EncodeJob] = []
    done: list[Path] = []
    owner: dict[Path, Path] = {}
    for path in files:
        out = codes_path(path, data_dir or path.parent, output_dir)
        if out in owner:  # a.wav and a.mp3 would both write a.npy
            _skip(skipped, path, f"same output {out.name} as {owner[out].name}")
            continue
        owner[out] = path
        if out.exists() and not overwrite:
            done.append(path)
            continue
        try:
            info = sf.info(str(path))
            frames, sr = int(info.frames), int(info.samplerate)
        except Exception:  # unreadable header: let the worker report the decoder's error
            frames, sr = -1, SAMPLE_RATE
        if frames == 0:
            _skip(skipped, path, "empty file (0 samples)")
            continue
        n44 = audio_lib.resampled_length(frames, sr, SAMPLE_RATE) if frames > 0 else 0
        todo.append(EncodeJob(path, out, n44, n44 / SAMPLE_RATE))
    return todo, done


def make_batches(
    clips: list[EncodeJob], batch_size: int, max_batch_samples: int, max_single: int
) -> list[list[int]]:
    """Length-bucketed batches (longest first): at most `batch_size` clips and `max_batch_samples`
    padded samples each; clips over `max_single` samples (windowed encoding) go alone."""
    order = sorted(range(len(clips)), key=lambda i: (-clips[i].samples_44k, clips[i].path.as_posix()))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        n = max(clips[i].samples_44k, 1)
        longest = clips[current[0]].samples_44k if current else n
        too_big = (len(current) + 1) * max(longest, 1) > max_batch_samples
        if current and (len(current) >= batch_size or too_big or longest > max_single):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


class AudioDataset(Dataset):
    """Decodes and mono-mixes one clip per item; errors are returned, not raised, so the run goes on."""

    def __init__(self, clips: list[EncodeJob]):
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.clips[i].path
        try:
            wav, sr = audio_lib.load_audio(path)
            mono = np.ascontiguousarray(audio_lib.downmix(wav), dtype=np.float32)
            if mono.size == 0:
                return {"index": i, "error": "empty file (0 samples)"}
            if not np.isfinite(mono).all():
                return {"index": i, "error": "non-finite samples (NaN or inf)"}
            return {"index": i, "wav": torch.from_numpy(mono), "sr": sr}
        except UserError as e:
            return {"index": i, "error": str(e).removeprefix(f"{path}: ")}
        except Exception as e:  # any decoder failure is a per-clip skip
            return {"index": i, "error": f"cannot read audio ({type(e).__name__}: {e})"}


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is single-threaded; leave the cores to the model


# Peak activation memory per padded input sample with S1-mini in float32 (measured on CPU by
# bench/extract_vq.py), with room for allocator slack.
ACTIVATION_BYTES_PER_SAMPLE = 1500


def default_max_batch_samples(device: torch.device, batch_size: int) -> int:
    """Padded samples per batch. CPU: 4 s, so only short clips share a batch (batching longer clips
    made CPU encoding slower in bench/extract_vq.py, and one clip per call is exactly upstream's
    batch-1 arithmetic). GPU: batch_size x 60 s, capped to 60 % of the free memory."""
    if device.type != "cuda":
        return 4 * SAMPLE_RATE
    free, _ = torch.cuda.mem_get_info(device)
    by_memory = int(0.6 * free / ACTIVATION_BYTES_PER_SAMPLE)
    return max(min(batch_size * 60 * SAMPLE_RATE, by_memory), 10 * SAMPLE_RATE)


# Batches up to this many padded samples run with freed memory kept on the heap (see `HeapMode`).
HEAP_MODE_MAX_SAMPLES = 20 * SAMPLE_RATE


class HeapMode:
    """Switch glibc between "keep freed blocks on the heap" and its default (fresh mmap per big block).

    By default every tensor over 32 MB is a fresh mmap whose pages are faulted in and zeroed on first
    touch: with S1-mini on CPU a large share of the run time then goes to page faults in the kernel.
    Serving them from the heap makes CPU encoding faster but fragments the heap, raising the peak memory
    of long clips (both measured by bench/extract_vq.py; figures in README).
    So it is used for batches of up to 20 s only, and memory is handed back (malloc_trim) before a
    longer batch. Numerics are unchanged. Linux/glibc only (else a no-op).
    """

    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    DEFAULT_MMAP_MAX = 65536

    def __init__(self) -> None:
        self.libc = None
        self.on = False
        import ctypes
        import platform

        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                self.libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self.libc = None

    def set(self, on: bool) -> None:
        if self.libc is None or on == self.on:
            return
        if on:
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 2**31 - 1)
            self.libc.mallopt(self.M_MMAP_MAX, 0)
        else:
            self.libc.mallopt(self.M_MMAP_MAX, self.DEFAULT_MMAP_MAX)
            self.libc.mallopt(self.M_TRIM_THRESHOLD, 128 * 1024)
            self.libc.malloc_trim(0)
        self.on = on
        log.debug("glibc heap mode %s", "on" if on else "off")


def save_codes(path: Path, codes: np.ndarray) -> None:
    """np.save (format 1.0, int64, C order) through a temporary file and rename."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.ascontiguousarray(codes, dtype=np.int64))


class _Encoder:
    """Resample, pad, encode and save one batch; halves the batch on CUDA out-of-memory."""

    def __init__(self, model: Codec, device: torch.device, autocast_dtype: torch.dtype | None):
        self.model = model
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.heap = HeapMode() if device.type == "cpu" else None

    def prepare(self, item: dict[str, Any]) -> torch.Tensor:
        wav = item["wav"].to(self.device, non_blocking=True)
        return audio_lib.resample(wav, item["sr"], SAMPLE_RATE)

    def encode(self, wavs: list[torch.Tensor]) -> list[np.ndarray]:
        try:
            return self._encode(wavs)
        except torch.cuda.OutOfMemoryError:
            if len(wavs) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(wavs) // 2
            log.warning("CUDA out of memory on a batch of %d; retrying in halves", len(wavs))
            return self.encode(wavs[:half]) + self.encode(wavs[half:])

    def _encode(self, wavs: list[torch.Tensor]) -> list[np.ndarray]:
        lengths = [int(w.shape[-1]) for w in wavs]
        longest = max(lengths)
        if self.heap is not None:
            self.heap.set(longest * len(wavs) <= HEAP_MODE_MAX_SAMPLES)
        batch = torch.stack([F.pad(w, (0, longest - w.shape[-1])) for w in wavs]).unsqueeze(1)
        with torch.autocast(
            self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        ):
            codes, frames = self.model.encode(batch, torch.tensor(lengths, device=self.device))
        codes = codes.cpu().numpy()  # the one host sync per batch
        return [codes[i, :, : self.model.frames_for(n)] for i, n in enumerate(lengths)]


def extract_vq(
    data_dir: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    options: ExtractOptions | None = None,
    *,
    max_batch_samples: int | None = None,
    model: Codec | None = None,
    progress: bool = True,
    **settings: Any,
) -> dict[str, Any]:
    """Write `<stem>.npy` codes for every audio file under `data_dir`; return a summary dict.

    The settings are an `ExtractOptions` (codec/options.py: defaults and meaning), given whole or as
    keyword arguments (`batch_size=4`). Codes go beside each clip (upstream's layout), or, with
    `output_dir`, to `output_dir/<rel>/<stem>.npy`, where `<rel>` is the clip's folder relative to
    `data_dir` (the input folder is then only read). `model` reuses an already loaded codec (benchmarks,
    tests).
    """
    opts = dataclasses.replace(options or ExtractOptions(), **settings)
    start = time.perf_counter()
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(f"{root}: data folder not found")
    if opts.batch_size < 1 or opts.num_workers < 0:
        raise UserError(
            f"--batch-size must be >= 1 and --num-workers >= 0 (got {opts.batch_size}, {opts.num_workers})"
        )
    if not (opts.num_shards >= 1 and 0 <= opts.shard_index < opts.num_shards):
        raise UserError(
            f"--shard-index must be in [0, {opts.num_shards}) (got {opts.shard_index} of {opts.num_shards})"
        )
    autocast_dtype = {"float32": None, "bfloat16": torch.bfloat16}.get(opts.precision, "?")
    if autocast_dtype == "?":
        raise UserError(f"--precision must be float32 or bfloat16 (got {opts.precision})")
    dev = resolve_device(opts.device)
    if model is None:  # before anything else: a wrong path must fail even when every clip is done
        checkpoint_path, _ = check_codec_file(checkpoint_path)

    files = discover_audio(root)[opts.shard_index :: opts.num_shards]
    skipped: list[dict] = []
    out_root = Path(opts.output_dir) if opts.output_dir is not None else None
    clips, done = plan_clips(files, opts.overwrite, skipped, root, out_root)
    summary: dict[str, Any] = {
        "data_dir": str(root),
        "output_dir": str(out_root) if out_root is not None else None,
        "checkpoint": str(checkpoint_path),
        "shard_index": opts.shard_index,
        "num_shards": opts.num_shards,
        "device": str(dev),
        "precision": opts.precision,
        "files": len(files),
        "written": 0,
        "already_done": len(done),
        "skipped": skipped,
        "audio_seconds": 0.0,
        "frames": 0,
    }
    if clips:
        if model is None:
            model = load_codec(checkpoint_path, device=dev, encode_only=True)
        else:
            model = model.to(dev).eval()
        limit = max_batch_samples or default_max_batch_samples(dev, opts.batch_size)
        batches = make_batches(clips, opts.batch_size, limit, model.config.max_input_samples)
        _run(model, dev, autocast_dtype, clips, batches, opts.num_workers, summary, progress)

    wall = time.perf_counter() - start
    summary["audio_hours"] = summary["audio_seconds"] / 3600
    summary["wall_seconds"] = wall
    summary["audio_seconds_per_second"] = summary["audio_seconds"] / wall if wall > 0 else 0.0
    summary["skip_reasons"] = dict(Counter(_reason_kind(s["reason"]) for s in skipped))
    log.info(
        "extract-vq: %d files: %d written, %d already done, %d skipped%s; %.3f h of audio, %d frames, "
        "%.1f s (%.2f audio-s/s)",
        len(files),
        summary["written"],
        len(done),
        len(skipped),
        f" ({', '.join(f'{k}: {v}' for k, v in summary['skip_reasons'].items())})" if skipped else "",
        summary["audio_hours"],
        summary["frames"],
        wall,
        summary["audio_seconds_per_second"],
    )
    return summary


def _reason_kind(reason: str) -> str:
    for kind in ("empty", "non-finite", "same output", "cannot read", "resampl"):
        if kind in reason:
            return kind
    return reason.split(":")[0][:40]


def _run(
    model: Codec,
    dev: torch.device,
    autocast_dtype: torch.dtype | None,
    clips: list[EncodeJob],
    batches: list[list[int]],
    num_workers: int,
    summary: dict[str, Any],
    progress: bool,
) -> None:
    loader = DataLoader(
        AudioDataset(clips),
        batch_sampler=batches,
        num_workers=num_workers,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers else None,
        pin_memory=dev.type == "cuda",
        prefetch_factor=2 if num_workers else None,
    )
    encoder = _Encoder(model, dev, autocast_dtype)
    # Counted in samples (integers): float seconds subtracted for skipped clips can leave the total
    # a rounding error below the sum of updates (tqdm then clamps and shows a negative ETA).
    bar = tqdm(
        total=sum(c.samples_44k for c in clips),
        unit="audio-s",
        unit_scale=1 / SAMPLE_RATE,
        desc="extract-vq",
        disable=not progress,
        dynamic_ncols=True,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} audio-s [{elapsed}<{remaining}, {rate_fmt}]",
    )
    try:
        with bar:
            for items in loader:
                ready: list[tuple[EncodeJob, torch.Tensor]] = []
                for item in items:
                    clip = clips[item["index"]]
                    if "error" in item:
                        _skip(summary["skipped"], clip.path, item["error"])
                        bar.total -= clip.samples_44k
                        continue
                    try:
                        ready.append((clip, encoder.prepare(item)))
                    except UserError as e:  # e.g. an absurd sample-rate pair
                        _skip(summary["skipped"], clip.path, str(e).removeprefix(f"{clip.path}: "))
                        bar.total -= clip.samples_44k
                if not ready:
                    continue
                codes = encoder.encode([w for _, w in ready])
                for (clip, wav), c in zip(ready, codes, strict=True):
                    save_codes(clip.output, c)
                    seconds = wav.shape[-1] / SAMPLE_RATE
                    summary["written"] += 1
                    summary["audio_seconds"] += seconds
                    summary["frames"] += int(c.shape[1])
                    bar.update(clip.samples_44k)  # the header's estimate, so the bar ends at its total
    finally:
        if encoder.heap is not None:
            encoder.heap.set(False)  # leave the process's allocator as we found it
