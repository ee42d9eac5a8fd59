"""The settings of a LoRA training run: the one declaration of each default, help text and flag.

Light on purpose (no torch): `fish-speech train` builds its flags from `TrainOptions` at start-up, and
`pipeline.py` reads its defaults. Defaults are upstream's fine-tuning config where it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

from fish_speech.errors import UserError
from fish_speech.options import option

# upstream's fish_speech/configs/lora/r_8_alpha_16.yaml; the configs themselves are in lora.py
DEFAULT_LORA_CONFIG = "r_8_alpha_16"
LORA_CONFIG_NAMES = (DEFAULT_LORA_CONFIG, "r_32_alpha_16_fast")  # keys of lora.LORA_CONFIGS (a test checks)
PRECISIONS = ("auto", "32", "32-true", "bf16-mixed", "bf16-true", "16-mixed")

MODES = ("lora", "full")

TRAIN_GROUPS = {
    "mode": "what to train",
    "lora": "LoRA",
    "optimisation": "optimisation (defaults: upstream's fine-tuning config)",
    "validation": "validation and checkpoints",
    "run": "run",
}


@dataclass
class TrainOptions:
    """Every setting of a run. `identity=False` marks those that do not change the trained weights."""

    # paths: the pipeline step keys its resume folder on the inputs' identities instead
    data: list[str] = option(
        help="protos file or folder (searched recursively); repeatable",
        metavar="PROTOS",
        repeat=True,
        identity=False,
    )
    base_weight: str = option(
        help="base checkpoint folder (model.pth, config.json, tokenizer files)", metavar="DIR", identity=False
    )
    output: str = option(
        help="results folder, e.g. results/PROJECT (checkpoints/, metrics, loss.png, summary.json)",
        metavar="DIR",
        identity=False,
    )
    mode: str = option(
        "lora",
        "lora (adapters, then merge-lora) or full (every slow and fast transformer weight; the output's "
        "model/ folder is the complete checkpoint, no merge)",
        group="mode",
        choices=MODES,
    )
    freeze_embeddings: bool = option(
        False, "--mode full: keep the token, codebook and fast embedding tables frozen", group="mode"
    )
    lora_config: str = option(
        DEFAULT_LORA_CONFIG, f"{', '.join(LORA_CONFIG_NAMES)}, or r_<R>_alpha_<A>", group="lora"
    )
    lora_r: int | None = option(None, "override the config's rank", group="lora")
    lora_alpha: float | None = option(None, "override the config's alpha", group="lora")
    lora_dropout: float | None = option(None, "override the config's dropout", group="lora")
    max_steps: int = option(10000, "optimizer steps", group="optimisation")
    batch_size: int = option(4, "samples per batch and device", group="optimisation")
    accumulate_grad_batches: int = option(1, "batches per optimizer step", group="optimisation")
    learning_rate: float = option(1e-4, "AdamW learning rate", group="optimisation")
    warmup_steps: int = option(10, "linear warm-up steps", group="optimisation")
    weight_decay: float = option(0.0, "AdamW weight decay", group="optimisation")
    gradient_clip: float = option(1.0, "gradient norm clipping", group="optimisation")
    max_length: int = option(4096, "tokens per sample", group="optimisation")
    precision: str = option(
        "auto",
        "auto (bf16-mixed on a GPU, 32 on CPU), 32, bf16-mixed, bf16-true, 16-mixed",
        group="optimisation",
    )
    seed: int = option(42, "data order, adapter init and dropout", group="optimisation")
    val_fraction: float = option(
        0.1, "share of each speaker's clips held out for validation (0 = none)", group="validation"
    )
    val_every: int | None = option(None, "validate every N steps (default: --save-every)", group="validation")
    val_batches: int = option(10, "at most this many validation batches", group="validation")
    save_every: int = option(100, "checkpoint every N steps", group="validation")
    keep_last: int = option(
        5, "keep the N newest checkpoints plus the earliest and the best (0 = all)", group="validation"
    )
    resume: bool = option(
        False,
        "continue from the last complete checkpoint in --output (starts fresh if there is none)",
        group="validation",
        identity=False,
    )
    overwrite: bool = option(
        False, "delete an earlier run's checkpoints and start again", group="validation", identity=False
    )
    num_workers: int = option(2, "data-loader worker processes", group="run", identity=False)
    log_every: int = option(10, "log and write metrics every N steps", group="run", identity=False)
    devices: str | int = option(
        "auto", "devices to use: auto (all GPUs, DDP when > 1) or a count", group="run"
    )

    def check(self) -> None:
        """Raise `UserError` for a setting no run can use."""
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: use lora or full")
        if self.freeze_embeddings and self.mode != "full":
            raise UserError(
                "--freeze-embeddings applies to --mode full only (LoRA adapts what its config names)"
            )
        positive = (
            "max_steps",
            "batch_size",
            "accumulate_grad_batches",
            "save_every",
            "val_batches",
            "max_length",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise UserError(f"--learning-rate must be positive, got {self.learning_rate}")
        if self.val_every is not None and self.val_every <= 0:
            raise UserError(f"--val-every must be positive, got {self.val_every}")
        if self.precision not in PRECISIONS:
            raise UserError(
                f"--precision {self.precision!r}: use auto, 32, bf16-mixed, bf16-true or 16-mixed"
            )


# Synthesis: here (no torch) so that `fish-speech synthesize` and `evaluate` build their flags from it at start-up.
@dataclass(frozen=True)
class SamplingSettings:
    """Sampling knobs (defaults: upstream's CLI/API) and the quirk switch."""

    temperature: float = 0.8
    top_p: float = 0.8
    repetition_penalty: float = 1.1
    max_new_tokens: int = 1024  # 0 = up to max_seq_len (upstream's CLI default)
    upstream_quirks: bool = True

    def validate(self) -> None:
        """UserError for values upstream's `generate_long` rejects (and for negative max_new_tokens)."""
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if not 0 < self.repetition_penalty < 2:
            raise UserError(f"--repetition-penalty must be in (0, 2), got {self.repetition_penalty}")
        if not 0 < self.temperature < 2:
            raise UserError(f"--temperature must be in (0, 2), got {self.temperature}")
        if self.max_new_tokens < 0:
            raise UserError(
                f"--max-new-tokens must be >= 0 (0 = up to the context), got {self.max_new_tokens}"
            )
