"""`fish-speech synthesize`: text -> 44.1 kHz WAV (+ codes .npy) with a checkpoint folder, as upstream's inference."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.layout import CODEC_FILE
from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG, SamplingSettings

SAMPLING = SamplingSettings()  # upstream's CLI/API defaults, declared once

HELP = (
    "synthesize speech from text with a checkpoint folder (optionally a LoRA checkpoint and reference clips)"
)
MANIFEST = "manifest.json"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="base or merged checkpoint folder")
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", help="the text to speak")
    text.add_argument(
        "--text-file", metavar="F", help="UTF-8 file, one utterance per line (blank lines skipped)"
    )
    parser.add_argument(
        "--output", required=True, metavar="OUT.wav|DIR", help="WAV file (--text) or folder (--text-file)"
    )
    parser.add_argument(
        "--reference-audio",
        action="append",
        default=[],
        metavar="A.wav|A.npy",
        help="voice to clone: an audio file (encoded with the codec) or its codes .npy; repeatable",
    )
    parser.add_argument(
        "--reference-text",
        action="append",
        default=[],
        metavar="TEXT",
        help="transcript of each --reference-audio",
    )
    parser.add_argument(
        "--reference-dir",
        metavar="DIR",
        help="speaker folder of the training layout: uses up to 3 clips with transcripts, 3-10 s first",
    )
    parser.add_argument(
        "--lora", metavar="CKPT", help="LoRA checkpoint applied in memory (or best|last|earliest|step_N)"
    )
    parser.add_argument(
        "--train-output", metavar="RUN", help="the folder `fish-speech train` wrote (for --lora selectors)"
    )
    parser.add_argument(
        "--lora-config",
        default=DEFAULT_LORA_CONFIG,
        help=f"LoRA config of --lora (default {DEFAULT_LORA_CONFIG})",
    )
    parser.add_argument("--seed", type=int, default=42, help="random seed of every utterance (default 42)")
    parser.add_argument(
        "--temperature", type=float, default=SAMPLING.temperature, help=f"default {SAMPLING.temperature}"
    )
    parser.add_argument("--top-p", type=float, default=SAMPLING.top_p, help=f"default {SAMPLING.top_p}")
    parser.add_argument(
        "--repetition-penalty",
        type=float,
        default=SAMPLING.repetition_penalty,
        help=f"default {SAMPLING.repetition_penalty}",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=SAMPLING.max_new_tokens,
        help=f"frames per piece, 0 = up to the context (default {SAMPLING.max_new_tokens})",
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="utterances (pieces) generated together (default 1)"
    )
    parser.add_argument(
        "--max-chars",
        type=int,
        default=300,
        help="split longer text at sentence ends into pieces of at most this many characters (0 = never; default 300)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (cuda if available), cpu or cuda (default auto)"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (bfloat16 on CUDA as upstream, float32 on CPU), bfloat16, float16 or float32",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the per-frame decode (CUDA graphs on CUDA)"
    )
    parser.add_argument(
        "--no-upstream-quirks",
        dest="upstream_quirks",
        action="store_false",
        help="fix upstream's four token-changing defects (penalty window, history, first-frame stop, last frame)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="with --text-file: redo utterances already written"
    )


def _read_texts(args: argparse.Namespace) -> list[str]:
    if args.text is not None:
        if not args.text.strip():
            raise UserError("--text is empty")
        return [args.text]
    path = Path(args.text_file)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{path}: text file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read text file ({e})") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise UserError(f"{path}: no text (one utterance per line)")
    if len(texts) < len(lines):
        log.info("%s: %d blank lines skipped", path, len(lines) - len(texts))
    return texts


def _check_output(args: argparse.Namespace) -> Path:
    out = Path(args.output)
    if args.text is not None:
        if out.suffix.lower() != ".wav":
            raise UserError(f"--output {out}: with --text, give a .wav file name")
        if out.is_dir():
            raise UserError(f"--output {out}: is a folder; give a .wav file name")
    elif out.suffix.lower() == ".wav" or out.is_file():
        raise UserError(
            f"--output {out}: with --text-file, give a folder (it gets 0001.wav, ... and {MANIFEST})"
        )
    return out


def run(args: argparse.Namespace) -> int:
    texts = _read_texts(args)
    out = _check_output(args)
    codec = Path(args.checkpoint, CODEC_FILE)
    if not codec.is_file() and Path(args.checkpoint).is_dir():
        raise UserError(f"{codec}: missing; synthesis needs the codec of the checkpoint folder")
    if args.lora is None and args.train_output is not None:
        raise UserError("--train-output is only used with --lora")

    from tqdm import tqdm

    from fish_speech.synthesis import apply_lora, build_prompts, load_voice, synthesize, write_utterance
    from fish_speech.text2semantic.generate import SamplingSettings

    settings = SamplingSettings(
        temperature=args.temperature,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        max_new_tokens=args.max_new_tokens,
        upstream_quirks=args.upstream_quirks,
    )
    settings.validate()
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    voice = load_voice(args.checkpoint, device=args.device, precision=args.precision)
    if args.lora:
        apply_lora(voice, args.lora, args.lora_config, args.train_output)
    references = voice.references(args.reference_audio, args.reference_text, args.reference_dir)
    record = {
        "checkpoint": str(Path(args.checkpoint)),
        "lora": voice.lora,
        "references": [
            {"source": r.source, "text": r.text, "frames": int(r.codes.shape[1])} for r in references
        ],
        "seed": args.seed,
        "settings": {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "repetition_penalty": settings.repetition_penalty,
            "max_new_tokens": settings.max_new_tokens,
            "upstream_quirks": settings.upstream_quirks,
            "max_chars": args.max_chars,
            "device": str(voice.device),
            "precision": str(voice.dtype).removeprefix("torch."),
            "batch_size": args.batch_size,
            "compile": args.compile,
        },
    }

    # --text-file: resume, skipping utterances whose files exist under the same settings
    names = [out.name] if args.text is not None else [f"{i + 1:04d}.wav" for i in range(len(texts))]
    folder = out.parent if args.text is not None else out
    fingerprint = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    done: dict[str, dict] = {}
    manifest_path = folder / MANIFEST
    if args.text_file is not None and not args.overwrite and manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
            if old.get("fingerprint") == fingerprint:
                done = {
                    u["wav"]: u
                    for u in old.get("utterances", [])
                    if (folder / u["wav"]).is_file() and (folder / u["codes"]).is_file()
                }
        except (OSError, ValueError, KeyError, TypeError):
            done = {}
    todo = [i for i, n in enumerate(names) if not (n in done and done[n]["text"] == texts[i])]
    if len(todo) < len(texts):
        log.info(
            "%d of %d utterances already written under these settings; skipped",
            len(texts) - len(todo),
            len(texts),
        )

    entries = {n: done[n] for n in names if n in done}
    build_prompts(
        voice, [texts[i] for i in todo], references, args.max_chars
    )  # every length error before any work
    bar_utt = tqdm(total=len(todo), desc="utterances", unit="utt", disable=len(todo) <= 1)
    bar_tok = tqdm(desc="frames", unit="step")

    def progress(kind: str, n: int) -> None:
        (bar_utt if kind == "utterance" else bar_tok).update(n)

    with bar_utt, bar_tok:
        # in slices of the batch size, so that each slice is written (and resumable) when done
        step = max(args.batch_size, 1)
        for start in range(0, len(todo), step):
            idx = todo[start : start + step]
            utts = synthesize(
                voice,
                [texts[i] for i in idx],
                references,
                settings,
                seed=args.seed,
                batch_size=args.batch_size,
                max_chars=args.max_chars,
                compile=args.compile,
                progress=progress,
            )
            for i, utt in zip(idx, utts, strict=True):
                wav, npy = write_utterance(utt, folder / names[i])
                rtf = utt.generation_seconds / utt.seconds if utt.seconds else None
                entries[names[i]] = {
                    "index": i + 1,
                    "wav": wav.name,
                    "codes": npy.name,
                    "text": utt.text,
                    "seed": args.seed,
                    "pieces": utt.pieces,
                    "stop": utt.stops,
                    "frames": utt.frames,
                    "seconds": round(utt.seconds, 4),
                    "real_time_factor": None if rtf is None else round(rtf, 4),
                }
                tqdm.write(
                    f"synthesize: wrote {wav} ({utt.frames} frames, {utt.seconds:.2f} s"
                    + (f", real-time factor {rtf:.2f})" if rtf is not None else ")")
                )
            if args.text_file is not None:
                _write_manifest(
                    manifest_path, record, fingerprint, [entries[n] for n in names if n in entries]
                )
    return 0


def _write_manifest(path: Path, record: dict, fingerprint: str, utterances: list[dict]) -> None:
    from fish_speech.fileio import atomic_write_text

    data = {**record, "fingerprint": fingerprint, "utterances": utterances}
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
