"""The whole evaluation: synthesize the held-out sentences with every candidate, score, choose, report.

Candidates: the base model and each chosen checkpoint. A checkpoint's adapters are folded into the
base weights in memory (`merge_lora_weights`, the same arithmetic `merge-lora` writes to disk), so a
candidate sounds exactly as its merged folder would, and generation runs at the base model's speed.
Every candidate gets the same prompts, sampling settings and per-sentence seeds (`seed + i` for
sentence i), so differences come from the weights alone. Sentences are generated in batches.

A candidate utterance that produces no audio (it stops at once) is a *failure*: transcript "", CER
and WER 1, similarity 0, duration ratio 0; it is counted, not raised.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fish_speech.errors import UserError
from fish_speech.evaluate import metrics as M
from fish_speech.evaluate.choice import (
    BASE,
    DEFAULT_CER_MARGIN,
    DEFAULT_SIMILARITY_MARGIN,
    CandidateScore,
    choose_checkpoint,
)
from fish_speech.evaluate.models import DEFAULT_ASR, DEFAULT_SPEAKER_MODEL
from fish_speech.evaluate.report import REAL
from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG, SamplingSettings

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = "earliest,best,last"
SAMPLE_RATE = 44100


@dataclass
class EvalOptions:
    """Settings of one evaluation (all recorded in eval.json)."""

    base_weight: str
    train_output: str
    data: str
    output: str
    codes: list[str] = field(default_factory=list)  # code folders, as build-dataset --codes
    checkpoints: str = DEFAULT_CHECKPOINTS
    sentences: int = 8
    asr: str = DEFAULT_ASR
    speaker_model: str = DEFAULT_SPEAKER_MODEL
    model_cache: str | None = None
    asr_language: str | None = None
    seed: int = 42
    device: str = "auto"
    batch_size: int = 8
    temperature: float = SamplingSettings.temperature
    top_p: float = SamplingSettings.top_p
    repetition_penalty: float = SamplingSettings.repetition_penalty
    max_new_tokens: int | None = None  # None: 2 × the longest real sentence + 64 frames, at most 1024
    similarity_margin: float = DEFAULT_SIMILARITY_MARGIN
    cer_margin: float = DEFAULT_CER_MARGIN
    lora_config: str | None = None  # None: the one train recorded in summary.json
    overwrite: bool = False


def resolve_candidates(which: str, train_output: str | os.PathLike) -> list[tuple[int, Path]]:
    """`all`, or comma-separated `earliest`/`best`/`last`/`step_N`: (step, path) sorted, without repeats."""
    from fish_speech.text2semantic.training.checkpoints import (
        CHECKPOINT_DIR,
        checkpoint_step,
        list_checkpoints,
        select_checkpoint,
    )

    root = Path(train_output)
    if which.strip() == "all":
        found = list_checkpoints(root / CHECKPOINT_DIR)
        if not found:
            raise UserError(f"{root / CHECKPOINT_DIR}: no step_*.ckpt checkpoints to evaluate")
        return found
    chosen: dict[int, Path] = {}
    for item in (s.strip() for s in which.split(",")):
        if not item:
            continue
        try:
            path = select_checkpoint(item, root)
        except UserError as e:
            if item == "best" and "validation loss" in str(e):
                log.warning("%s; leaving 'best' out", e)
                continue
            raise
        chosen[checkpoint_step(path)] = path
    if not chosen:
        raise UserError(f"--checkpoints {which!r}: no checkpoint selected")
    return sorted(chosen.items())


def _fingerprint(opts: EvalOptions, candidates: list[tuple[int, Path]]) -> dict[str, Any]:
    from fish_speech.storage.manifest import sha256_file

    return {
        "options": {k: v for k, v in asdict(opts).items() if k not in ("overwrite", "output")},
        "checkpoints": {p.name: sha256_file(p) for _, p in candidates},
    }


def _load_real(path: Path | None) -> np.ndarray:
    from fish_speech.audio import downmix, load_audio, resample

    if path is None:
        return np.zeros(0, np.float32)
    data, sr = load_audio(path)
    x = downmix(data)
    if sr != SAMPLE_RATE:
        import torch

        x = resample(torch.from_numpy(np.ascontiguousarray(x)), sr, SAMPLE_RATE).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def _val_losses(train_output: Path) -> dict[int, float]:
    path = train_output / "metrics.json"
    try:
        rows = json.loads(path.read_text(encoding="utf-8")).get("val", [])
        return {int(r["step"]): float(r["loss"]) for r in rows if r.get("loss") is not None}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def evaluate(opts: EvalOptions) -> dict[str, Any]:
    """Run the evaluation of the module docstring; write eval.json, eval.csv, report.html and audio/."""
    import torch
    from tqdm import tqdm

    from fish_speech.evaluate.models import ASRModel, SpeakerModel, fetch_model
    from fish_speech.evaluate.report import write_outputs
    from fish_speech.evaluate.sentences import read_train_summary, select_sentences
    from fish_speech.layout import CODEC_FILE
    from fish_speech.synthesis import apply_lora, load_voice, synthesize
    from fish_speech.text2semantic.checkpoint import check_dir, load_config, load_tokenizer
    from fish_speech.text2semantic.lora import resolve_lora_spec
    from fish_speech.text2semantic.prompt import Reference

    started = time.monotonic()
    timing: dict[str, float] = {}
    out = Path(opts.output)
    train_output = Path(opts.train_output)
    if opts.sentences <= 0 or opts.batch_size <= 0:
        raise UserError("--sentences and --batch-size must be positive")
    if opts.similarity_margin < 0 or opts.cer_margin < 0:
        raise UserError("--similarity-margin and --cer-margin must be >= 0")
    # bad sampling settings fail now, not after the models are loaded
    SamplingSettings(
        opts.temperature, opts.top_p, opts.repetition_penalty, opts.max_new_tokens or 0
    ).validate()
    base = check_dir(opts.base_weight)
    if not (base / CODEC_FILE).is_file():
        raise UserError(f"{base}: no {CODEC_FILE} (the codec decodes the generated codes)")
    summary = read_train_summary(train_output)
    train_opts = summary.get("options", {})
    candidates = resolve_candidates(opts.checkpoints, train_output)
    fingerprint = _fingerprint(opts, candidates)
    done = out / "eval.json"
    if done.is_file() and not opts.overwrite:
        try:
            previous = json.loads(done.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
        if previous.get("fingerprint") == fingerprint:
            log.info("%s: this evaluation is already done (same inputs); nothing to do", done)
            return previous

    from fish_speech.devices import resolve_device

    device = str(resolve_device(opts.device))
    cache = Path(opts.model_cache or Path.home() / ".cache" / "fish-speech" / "eval-models")
    # models first: a model that cannot be fetched or loaded fails before any generation
    t = time.monotonic()
    asr = ASRModel(fetch_model(opts.asr, cache, "asr"), device=device, language=opts.asr_language)
    speaker = SpeakerModel(fetch_model(opts.speaker_model, cache, "speaker"), device=device)
    timing["load_eval_models_s"] = time.monotonic() - t

    config = load_config(base)
    tokenizer = load_tokenizer(base)
    evalset = select_sentences(
        opts.data,
        float(train_opts.get("val_fraction", 0.1)),
        tokenizer,
        int(train_opts.get("max_length", 4096)),
        config.num_codebooks,
        config.codebook_size,
        max_sentences=opts.sentences,
        code_roots=opts.codes,
    )
    sents = evalset.sentences
    ids = [f"s{i + 1:02d}" for i in range(len(sents))]
    log.info(
        "evaluating %d candidates (base + %s) on %d sentences of %d speakers",
        len(candidates) + 1,
        ", ".join(p.name for _, p in candidates),
        len(sents),
        len(evalset.prompts),
    )

    # ---- the real recordings: the ASR ceiling and the speakers' voices ----
    t = time.monotonic()
    real_audio = [_load_real(s.audio_path) for s in sents]
    ref_emb: dict[str, np.ndarray] = {}
    for spk, refs in evalset.references.items():
        clips = [_load_real(r.audio_path) for r in refs if r.audio_path is not None]
        ref_emb[spk] = speaker.embed(clips, SAMPLE_RATE) if clips else np.zeros((0, 1), np.float32)
    ref_paths = {spk: [r.codes_path for r in refs] for spk, refs in evalset.references.items()}
    centroids = {spk: M.centroid(e) for spk, e in ref_emb.items() if len(e)}
    real_text = asr.transcribe(real_audio, SAMPLE_RATE)
    real_emb = speaker.embed(real_audio, SAMPLE_RATE)
    per_utt: list[dict[str, dict[str, Any]]] = [{} for _ in sents]
    for i, s in enumerate(sents):
        others = [
            e for p, e in zip(ref_paths[s.speaker], ref_emb[s.speaker], strict=True) if p != s.codes_path
        ]
        sim = M.cosine_similarity(real_emb[i], M.centroid(others)) if others else None
        per_utt[i][REAL] = {
            "transcript": real_text[i],
            "cer": M.cer(s.text, real_text[i]),
            "wer": M.wer(s.text, real_text[i]),
            "similarity": sim,
            "seconds": len(real_audio[i]) / SAMPLE_RATE,
            "duration_ratio": 1.0,
            "failed": False,
        }
    timing["real_clips_s"] = time.monotonic() - t

    # ---- generation ----
    voice = load_voice(base, device=device)
    lora_config = opts.lora_config or train_opts.get("lora_config", DEFAULT_LORA_CONFIG)
    spec = resolve_lora_spec(
        lora_config,
        None if opts.lora_config else train_opts.get("lora_r"),
        None if opts.lora_config else train_opts.get("lora_alpha"),
    )
    longest = max(s.frames for s in sents)
    max_new = opts.max_new_tokens or min(1024, 2 * longest + 64)
    settings = SamplingSettings(
        temperature=opts.temperature,
        top_p=opts.top_p,
        repetition_penalty=opts.repetition_penalty,
        max_new_tokens=max_new,
    )
    references = {
        spk: Reference(p.text.strip(), p.codes().astype(np.int64), str(p.codes_path))
        for spk, p in evalset.prompts.items()
    }
    by_speaker = {spk: [i for i, s in enumerate(sents) if s.speaker == spk] for spk in references}

    audio: dict[tuple[str, str], tuple[np.ndarray, int]] = {}
    for i, x in enumerate(real_audio):
        audio[(ids[i], REAL)] = (x, SAMPLE_RATE)
    gen_seconds: dict[str, float] = {}
    names = [BASE] + [p.name.removesuffix(".ckpt") for _, p in candidates]
    paths = [None] + [p for _, p in candidates]
    for name, ckpt in tqdm(list(zip(names, paths, strict=True)), desc="evaluate", unit="candidate"):
        t = time.monotonic()
        if ckpt is not None:  # always folded into the base weights, as merge-lora writes them
            apply_lora(voice, ckpt, lora_config=spec.name)
        wavs: list[np.ndarray] = [np.zeros(0, np.float32)] * len(sents)
        for spk, idx in by_speaker.items():
            utts = synthesize(
                voice,
                [sents[i].text.strip() for i in idx],
                [references[spk]],
                settings,
                seed=[opts.seed + i for i in idx],
                batch_size=opts.batch_size,
                max_chars=0,  # held-out sentences are single clips: never split
            )
            for i, u in zip(idx, utts, strict=True):
                wavs[i] = u.audio
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        gen_seconds[name] = time.monotonic() - t
        texts = asr.transcribe(wavs, SAMPLE_RATE)
        embs = speaker.embed(wavs, SAMPLE_RATE)
        for i, (s, wav) in enumerate(zip(sents, wavs, strict=True)):
            seconds = len(wav) / SAMPLE_RATE
            failed = len(wav) == 0
            centroid = centroids.get(s.speaker)
            per_utt[i][name] = {
                "transcript": "" if failed else texts[i],
                "cer": 1.0 if failed else M.cer(s.text, texts[i]),
                "wer": 1.0 if failed else M.wer(s.text, texts[i]),
                "similarity": 0.0
                if failed
                else (M.cosine_similarity(embs[i], centroid) if centroid is not None else None),
                "seconds": seconds,
                "duration_ratio": 0.0 if failed else M.duration_ratio(seconds, per_utt[i][REAL]["seconds"]),
                "failed": failed,
            }
            audio[(ids[i], name)] = (wav, SAMPLE_RATE)
        timing[f"candidate_{name}_s"] = time.monotonic() - t
    del voice

    # ---- aggregate, choose, write ----
    val_loss = _val_losses(train_output)
    steps = {BASE: None, REAL: None, **{p.name.removesuffix(".ckpt"): s for s, p in candidates}}
    rows = []
    scores = []
    for name in [REAL, *names]:
        utts = [u[name] for u in per_utt]
        row = {
            "name": name,
            "step": steps[name],
            "val_loss": val_loss.get(steps[name]) if steps[name] is not None else None,
            "similarity": M.mean(u["similarity"] for u in utts),
            "cer": M.mean(u["cer"] for u in utts),
            "wer": M.mean(u["wer"] for u in utts),
            "duration_ratio": M.mean(u["duration_ratio"] for u in utts),
            "utterances": len(utts),
            "failures": sum(u["failed"] for u in utts),
            "generation_seconds": gen_seconds.get(name),
        }
        rows.append(row)
        if name != REAL:
            scores.append(
                CandidateScore(
                    name,
                    row["step"],
                    row["similarity"],
                    row["cer"],
                    row["wer"],
                    row["utterances"],
                    row["failures"],
                )
            )
    choice = choose_checkpoint(scores, opts.similarity_margin, opts.cer_margin)
    speakers: dict[str, dict[str, dict[str, float | None]]] = {}
    for spk in evalset.prompts:
        idx = [i for i, s in enumerate(sents) if s.speaker == spk]
        speakers[spk] = {
            name: {
                "similarity": M.mean(per_utt[i][name]["similarity"] for i in idx),
                "cer": M.mean(per_utt[i][name]["cer"] for i in idx),
                "wer": M.mean(per_utt[i][name]["wer"] for i in idx),
            }
            for name in [REAL, *names]
        }
    utterances = [
        {
            "id": ids[i],
            "speaker": s.speaker,
            "text": s.text.strip(),
            "real_clip": str(s.audio_path) if s.audio_path else None,
            "prompt_clip": str(evalset.prompts[s.speaker].codes_path),
            "seen_in_training": s.speaker in evalset.seen_in_training,
            "scores": per_utt[i],
        }
        for i, s in enumerate(sents)
    ]
    chosen_path = next((str(p) for s, p in candidates if p.name.removesuffix(".ckpt") == choice.chosen), None)
    timing["total_s"] = time.monotonic() - started
    result = {
        "choice": {**choice.to_dict(), "checkpoint_path": chosen_path},
        "candidates": rows,
        "speakers": speakers,
        "utterances": utterances,
        "validation_loss": [{"step": s, "loss": v} for s, v in sorted(val_loss.items())],
        "notes": evalset.notes,
        "skipped_speakers": evalset.skipped,
        "options": {**asdict(opts), "device": device, "max_new_tokens": max_new, "lora": spec.to_dict()},
        "timing": {k: round(v, 3) for k, v in timing.items()},
        "fingerprint": fingerprint,
    }
    _write_audio(out / "audio", audio)
    write_outputs(out, result, audio)
    return result


def _write_audio(folder: Path, audio: dict[tuple[str, str], tuple[np.ndarray, int]]) -> None:
    """`audio/<candidate>/<sentence>.wav` (16-bit), each atomically: the full-quality files behind the players."""
    import soundfile as sf

    from fish_speech.fileio import atomic_path

    for (utt, name), (x, sr) in audio.items():
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        with atomic_path(folder / safe / f"{utt}.wav", suffix=".wav") as tmp:
            sf.write(tmp, np.clip(np.nan_to_num(x), -1, 1), sr, subtype="PCM_16", format="WAV")


def candidate_scores(result: dict[str, Any]) -> dict[str, CandidateScore]:
    """The aggregate rows of an eval.json as `CandidateScore`s by name (the real row left out)."""
    return {
        c["name"]: CandidateScore(
            c["name"],
            c.get("step"),
            c.get("similarity"),
            c.get("cer"),
            c.get("wer"),
            c.get("utterances", 0),
            c.get("failures", 0),
        )
        for c in result.get("candidates", [])
        if c["name"] != REAL
    }


def publish_decision(result: dict[str, Any], policy: str, checkpoint: str | None = None) -> tuple[bool, str]:
    """(publish?, one-line why) under `publish_policy` `always` or `if_better`, for the chosen checkpoint
    of an eval.json (or `checkpoint`, a candidate name, when the run merges another one)."""
    from fish_speech.evaluate.choice import compare_to_base

    choice = result.get("choice") or {}
    name = checkpoint or choice.get("chosen")
    if policy == "always":
        return True, f"publish_policy=always: publishing {name}"
    if policy != "if_better":
        raise UserError(f"publish_policy {policy!r}: use always or if_better")
    scores = candidate_scores(result)
    if name not in scores:
        return False, f"not published: {name} was not evaluated, so it cannot be shown to beat the base model"
    beats, why, _ = compare_to_base(
        scores[name],
        scores.get(BASE),
        choice.get("similarity_margin", DEFAULT_SIMILARITY_MARGIN),
        choice.get("cer_margin", DEFAULT_CER_MARGIN),
    )
    if beats:
        return True, f"{name} beats the base model: {why}"
    return False, f"not published: {name} does not beat the base model ({why}; publish_policy=if_better)"
