"""The ASR and speaker-verification models of `fish-speech evaluate`, through `transformers`.

- ASR: a Whisper checkpoint (`WhisperForConditionalGeneration` + its processor); default
  `hf://openai/whisper-large-v3-turbo` (multilingual, about 0.8 B parameters).
- Speaker similarity: a WavLM x-vector checkpoint (`WavLMForXVector`, trained for speaker verification);
  default `hf://microsoft/wavlm-base-plus-sv`.

Both come through the same fetch machinery as the base weights (`hf://`, `gs://`, `s3://`, a local or PVC
folder used in place; `MANIFEST.sha256`, reuse of an earlier fetch). `tiny` writes a random model in the
real Hugging Face layout (`config.json`, `model.safetensors`, processor and tokenizer files), so tests and
the demo load exactly what a real checkpoint would give them, without any download.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fish_speech.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_ASR = "hf://openai/whisper-large-v3-turbo"
DEFAULT_SPEAKER_MODEL = "hf://microsoft/wavlm-base-plus-sv"
MODEL_SAMPLE_RATE = 16000  # both model families take 16 kHz mono
ASR_MAX_SECONDS = 30.0  # Whisper's window; longer audio is cut (evaluation sentences are short)


# ---------------------------------------------------------------------------------------------- fetching


def _slug(source: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", source.split("://", 1)[-1]).strip("_") or "model"


def fetch_model(source: str, cache_dir: str | os.PathLike, kind: str, seed: int = 0) -> Path:
    """A local folder holding the `kind` ("asr" or "speaker") model of `source`.

    A local folder is used in place; `tiny` is written (once, then reused) under `cache_dir`; a remote
    source is mirrored into `cache_dir/<name>` with `MANIFEST.sha256`, reusing a verified earlier fetch.
    """
    from fish_speech.storage.manifest import (
        build_manifest,
        read_manifest,
        read_state,
        verify_manifest,
        write_manifest,
        write_state,
    )
    from fish_speech.storage.uri import parse_uri

    if kind not in ("asr", "speaker"):
        raise ValueError(kind)
    what = "ASR model" if kind == "asr" else "speaker model"
    try:
        uri = parse_uri(source)
    except UserError as e:
        raise UserError(f"{what} {source}: {e}") from e
    if uri.scheme == "local":
        if not (uri.path / "config.json").is_file():
            raise UserError(f"{what} {uri.path}: no config.json (expected a transformers model folder)")
        return uri.path
    if uri.scheme == "tiny":
        out = Path(cache_dir) / f"tiny-{kind}-seed{seed}"
        ident = f"tiny-{kind}:seed={seed}"
        previous = read_manifest(out) if out.is_dir() else None
        if previous and read_state(out).get("source") == ident and not verify_manifest(out, previous):
            return out
        (write_tiny_asr if kind == "asr" else write_tiny_speaker_model)(out, seed=seed)
        write_manifest(out, build_manifest(out))
        write_state(out, {"source": ident})
        return out
    from fish_speech.base_model.fetch import fetch_weights

    out = Path(cache_dir) / _slug(source)
    try:
        fetch_weights(source, out, check=False)
    except UserError as e:
        raise UserError(f"{what} {source}: {e}") from e
    return out


# ---------------------------------------------------------------------------------------------- loading


def _load(what: str, path: Path, fn):
    try:
        return fn()
    except UserError:
        raise
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/... for a broken folder
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"{what} {path}: cannot load ({type(e).__name__}: {first[:300]})") from e


def to_model_rate(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at the models' 16 kHz (the project's resampler)."""
    import torch

    from fish_speech.audio import downmix, resample

    audio = downmix(np.asarray(audio, dtype=np.float32))
    if sample_rate != MODEL_SAMPLE_RATE and audio.size:
        audio = resample(
            torch.from_numpy(np.ascontiguousarray(audio)), sample_rate, MODEL_SAMPLE_RATE
        ).numpy()
    return np.ascontiguousarray(audio, dtype=np.float32)


class ASRModel:
    """Whisper transcription of a batch of clips (any sample rate, resampled to 16 kHz)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu", dtype=None, language: str | None = None):
        import torch
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        self.path = Path(path)
        self.device = torch.device(device)
        self.language = language
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.processor = _load("ASR model", self.path, lambda: AutoProcessor.from_pretrained(self.path))
        self.model = _load(
            "ASR model",
            self.path,
            lambda: WhisperForConditionalGeneration.from_pretrained(self.path, dtype=self.dtype),
        )
        self.model.to(self.device).eval()
        log.info("ASR model %s on %s (%s)", self.path, self.device, self.dtype)

    def transcribe(self, clips: Sequence[np.ndarray], sample_rate: int, batch_size: int = 16) -> list[str]:
        import torch

        out: list[str] = []
        limit = int(ASR_MAX_SECONDS * MODEL_SAMPLE_RATE)
        for i in range(0, len(clips), batch_size):
            batch = [to_model_rate(c, sample_rate)[:limit] for c in clips[i : i + batch_size]]
            # an empty clip (a candidate that produced nothing) still needs one sample of input
            batch = [b if b.size else np.zeros(160, np.float32) for b in batch]
            features = self.processor.feature_extractor(
                batch, sampling_rate=MODEL_SAMPLE_RATE, return_tensors="pt"
            ).input_features.to(self.device, self.dtype)
            # up to the decoder's whole context (448 for Whisper): 30 s of Chinese can need 300 tokens
            kwargs = {"task": "transcribe", "max_length": self.model.config.max_target_positions}
            if self.language:
                kwargs["language"] = self.language
            with torch.inference_mode():
                ids = self.model.generate(features, **kwargs)
            out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


class SpeakerModel:
    """Speaker embeddings (x-vectors) of a batch of clips."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        import torch
        from transformers import AutoFeatureExtractor, WavLMForXVector

        self.path = Path(path)
        self.device = torch.device(device)
        self.extractor = _load(
            "speaker model", self.path, lambda: AutoFeatureExtractor.from_pretrained(self.path)
        )
        self.model = _load("speaker model", self.path, lambda: WavLMForXVector.from_pretrained(self.path))
        self.model.to(self.device).eval()
        log.info("speaker model %s on %s", self.path, self.device)

    def embed(self, clips: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
        """(clips, dim) float32 embeddings; a clip too short for the model gets a zero row.

        One clip at a time: WavLM's first convolution normalises over the whole (padded) input, so
        in a padded batch a clip's embedding would depend on the others'. Clips are short; this is cheap.
        """
        import torch

        # the convolutional front end needs at least 400 samples (25 ms) at 16 kHz
        min_samples = 400
        dim = self.model.config.xvector_output_dim
        rows = []
        for clip in clips:
            audio = to_model_rate(clip, sample_rate)
            if audio.size < min_samples:
                rows.append(np.zeros(dim, np.float32))
                continue
            inputs = self.extractor(audio, sampling_rate=MODEL_SAMPLE_RATE, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items()}
            with torch.inference_mode():
                rows.append(self.model(**inputs).embeddings[0].float().cpu().numpy())
        return np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


# ---------------------------------------------------------------------------------------------- tiny models


def _byte_vocab() -> dict[str, int]:
    """GPT-2's byte-to-unicode table as a vocabulary: one token per byte (what Whisper's BPE starts from)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): i for i, c in enumerate(cs)}


TINY_LANGUAGES = ("en", "zh", "de", "es", "ru", "ko", "fr", "ja")


# Shapes of the default models, for `write_tiny_asr(..., **LARGE_V3_TURBO)` in the GPU benchmark (random
# weights of the real size: their speed is what is measured).
LARGE_V3_TURBO = dict(
    num_mel_bins=128,
    d_model=1280,
    encoder_layers=32,
    decoder_layers=4,
    encoder_attention_heads=20,
    decoder_attention_heads=20,
    encoder_ffn_dim=5120,
    decoder_ffn_dim=5120,
    max_target_positions=448,
)
WAVLM_BASE_PLUS_SV = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    conv_dim=(512,) * 7,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    tdnn_dim=(512, 512, 512, 512, 1500),
    xvector_output_dim=512,
    num_buckets=320,
    max_bucket_distance=800,
)


def write_tiny_asr(out_dir: str | os.PathLike, seed: int = 0, **sizes) -> Path:
    """A random 1-layer Whisper in the real layout: config.json, model.safetensors, generation_config.json,
    preprocessor_config.json and a byte-level tokenizer (vocab.json, merges.txt, tokenizer files).
    `sizes` override the config (e.g. `LARGE_V3_TURBO`)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = _byte_vocab()
    specials = ["<|endoftext|>", "<|startoftranscript|>"]
    specials += [f"<|{lang}|>" for lang in TINY_LANGUAGES]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"]
    specials += ["<|notimestamps|>"]
    ids = {tok: len(vocab) + i for i, tok in enumerate(specials)}
    staging = out / ".tmp-tokenizer"
    staging.mkdir(exist_ok=True)
    (staging / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (staging / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    tokenizer = WhisperTokenizer(
        str(staging / "vocab.json"),
        str(staging / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    vocab_size = len(vocab) + len(specials)
    shape = dict(
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_target_positions=160,
    )
    shape.update(sizes)
    config = WhisperConfig(
        vocab_size=vocab_size,
        max_source_positions=1500,
        **shape,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[ids["<|endoftext|>"]],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    # a generation config of its own (not derived from config.json), as the real checkpoints have
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        no_timestamps_token_id=ids["<|notimestamps|>"],
        is_multilingual=True,
        lang_to_id={f"<|{lang}|>": ids[f"<|{lang}|>"] for lang in TINY_LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
    )
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=shape["num_mel_bins"]), tokenizer)
    # write everything into a staging folder, then move the files in (each by an atomic rename)
    model.save_pretrained(staging)
    processor.save_pretrained(staging)
    return _commit_staging(staging, out)


def write_tiny_speaker_model(out_dir: str | os.PathLike, seed: int = 0, **sizes) -> Path:
    """A random 1-layer WavLM x-vector model in the real layout: config.json, model.safetensors and
    preprocessor_config.json (a Wav2Vec2 feature extractor, as the real checkpoints have).
    `sizes` override the config (e.g. `WAVLM_BASE_PLUS_SV`)."""
    import torch
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    staging = out / ".tmp-speaker"
    staging.mkdir(exist_ok=True)
    shape = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        tdnn_dim=(32, 32, 32, 32, 64),
        xvector_output_dim=32,
        num_buckets=32,
        max_bucket_distance=100,
    )
    shape.update(sizes)
    config = WavLMConfig(**shape)
    torch.manual_seed(seed)
    WavLMForXVector(config).eval().save_pretrained(staging)
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=MODEL_SAMPLE_RATE, do_normalize=True, return_attention_mask=True
    ).save_pretrained(staging)
    return _commit_staging(staging, out)


def _commit_staging(staging: Path, out: Path) -> Path:
    """Move every file of `staging` into `out` (rename: atomic per file), then remove `staging`."""
    import shutil

    for path in sorted(staging.iterdir()):
        if path.is_file():
            os.replace(path, out / path.name)
    shutil.rmtree(staging, ignore_errors=True)
    return out
