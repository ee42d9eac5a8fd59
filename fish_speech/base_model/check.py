"""Check a base-model checkpoint directory before spending GPU time on it.

Everything the later steps will rely on is checked in seconds, without loading whole tensors
(`torch.load(mmap=True, weights_only=True)` maps the file; only shapes are read):
required files, `MANIFEST.sha256` (when present), `config.json`, the tokenizer, the keys and shapes of
`model.pth` (derived from `config.json`; for the S1-mini config that is the 287 keys of upstream's
release) and of `codec.pth` (the S1-mini codec's 541 keys for a full-size model, otherwise the layout
its own shapes imply), and that model, codec and tokenizer agree on the codebooks.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

from fish_speech.errors import UserError
from fish_speech.layout import (
    CODEC_FILE,
    CONFIG_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    SPECIAL_TOKENS_FILE,
    TOKENIZER_FILE,
)
from fish_speech.storage.manifest import read_manifest, verify_manifest

log = logging.getLogger(__name__)


@dataclass
class CheckpointReport:
    """What `check_checkpoint_dir` found (all checks passed)."""

    path: Path
    model: str
    model_tensors: int
    model_parameters: int
    codec: str
    codec_tensors: int
    tokenizer_tokens: int
    manifest_files: int | None

    def summary(self) -> str:
        manifest = (
            f"{self.manifest_files} files match MANIFEST.sha256"
            if self.manifest_files is not None
            else "no MANIFEST.sha256"
        )
        return (
            f"{self.path}: ok: {self.model} model ({self.model_tensors} tensors, {self.model_parameters:,} parameters), "
            f"{self.codec} codec ({self.codec_tensors} tensors), {self.tokenizer_tokens} tokens, {manifest}"
        )


def check_checkpoint_dir(path: str | os.PathLike, *, verify: bool = True, jobs: int = 4) -> CheckpointReport:
    """Check the base-model directory `path`; raise UserError naming the file and the problem.

    `verify=False` skips re-hashing the files listed in `MANIFEST.sha256`.
    """
    from fish_speech.codec.checkpoint import check_codec_state_dict, infer_codec_config, read_codec_state_dict
    from fish_speech.codec.model import CodecConfig
    from fish_speech.text2semantic.checkpoint import (
        check_state_dict,
        load_config,
        load_tokenizer,
        read_state_dict,
    )
    from fish_speech.text2semantic.model import ModelConfig

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: checkpoint directory not found")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise UserError(
            f"{path}: missing {', '.join(missing)} (a base model needs {', '.join(REQUIRED_FILES)})"
        )

    manifest_files = None
    manifest = read_manifest(path)
    if manifest is not None:
        manifest_files = len(manifest)
        if verify:
            problems = verify_manifest(path, manifest, jobs)
            if problems:
                raise UserError(f"{path / MANIFEST_FILE}: " + "; ".join(problems[:5]))

    config = load_config(path)
    full_size = config.to_dict() == ModelConfig.s1_mini().to_dict()
    try:
        tokenizer = load_tokenizer(path)
    except UserError:
        raise
    except Exception as e:
        raise UserError(
            f"{path / TOKENIZER_FILE}: cannot read the tokenizer ({type(e).__name__}: {e})"
        ) from e
    if tokenizer.total_tokens > config.vocab_size:
        raise UserError(
            f"{path / CONFIG_FILE}: vocab_size {config.vocab_size} is smaller than the tokenizer's "
            f"{tokenizer.total_tokens} tokens"
        )

    state = read_state_dict(path / MODEL_FILE)
    check_state_dict(state, config, path / MODEL_FILE)
    parameters = sum(math.prod(t.shape) for t in state.values())

    codec_state = read_codec_state_dict(path / CODEC_FILE)
    codec = CodecConfig.s1_mini() if full_size else infer_codec_config(codec_state, path / CODEC_FILE)
    check_codec_state_dict(codec_state, codec, path / CODEC_FILE)

    # Codes from this codec must fit the model: one row per codebook, every value inside the codebook,
    # and one semantic token per semantic code.
    if config.num_codebooks != 1 + codec.n_codebooks:
        raise UserError(
            f"{path / CONFIG_FILE}: num_codebooks {config.num_codebooks}, but codec.pth produces "
            f"{1 + codec.n_codebooks} codebooks"
        )
    largest = max(codec.semantic_codebook_size, codec.codebook_size)
    if config.codebook_size < largest:
        raise UserError(
            f"{path / CONFIG_FILE}: codebook_size {config.codebook_size} < codec.pth's {largest} codes"
        )
    semantic_tokens = tokenizer.semantic_id_end - tokenizer.semantic_begin_id + 1
    if semantic_tokens < codec.semantic_codebook_size:
        raise UserError(
            f"{path / SPECIAL_TOKENS_FILE}: {semantic_tokens} semantic tokens for a codec with "
            f"{codec.semantic_codebook_size} semantic codes"
        )
    report = CheckpointReport(
        path=path,
        model="S1-mini" if full_size else f"{config.n_layer}-layer dim-{config.dim}",
        model_tensors=len(state),
        model_parameters=parameters,
        codec=codec.name,
        codec_tensors=len(codec_state),
        tokenizer_tokens=tokenizer.total_tokens,
        manifest_files=manifest_files,
    )
    log.info("%s", report.summary())
    return report
