"""The Lightning module: one training step of the DualAR model (LoRA or full), upstream's optimizer.

As upstream's `text2semantic_finetune.yaml` and `lit_module.py`: AdamW (lr 1e-4, betas 0.9/0.95,
eps 1e-5, weight decay 0, no decay for biases, norms and embeddings), LR factor `step/10` for the
first 10 optimizer steps then constant, gradient clipping at L2 norm 1.0 (the norm is kept for
logging). LoRA checkpoints keep only the adapter tensors under upstream's names
(`model.<path>.lora_A/B`); full fine-tuning checkpoints keep the whole `model.<name>` state dict, as
upstream's lit_module does without LoRA. Both carry the RNG states of every rank, so a resumed run
draws the same dropout masks as an uninterrupted one.

Distributed, the loss is the mean over the targets of all ranks' samples (each rank divides its
sums by the global target count), so `world` ranks at batch B step exactly like one process at
batch `world·B`; upstream averages per-rank means instead, which differs when ranks hold unequal
numbers of targets.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import torch

from fish_speech.errors import UserError
from fish_speech.text2semantic.lora import LoraSpec, lora_state_dict, normalize_lora_keys, to_internal_names
from fish_speech.text2semantic.loss import LossOutput, dual_ar_loss, target_counts

log = logging.getLogger(__name__)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Upstream's LambdaLR factor: `step / warmup` before `warmup` steps (0 on the first), then 1."""
    return step / warmup_steps if step < warmup_steps else 1.0


MODES = ("lora", "full")


class TrainModule(L.LightningModule):
    """Wraps a DualAR model: `mode="lora"` after `lora.setup_lora`, `mode="full"` with its own trainable set."""

    def __init__(
        self,
        model: torch.nn.Module,
        spec: LoraSpec | None,
        mode: str = "lora",
        learning_rate: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 10,
    ) -> None:
        super().__init__()
        if mode not in MODES or (mode == "lora") != (spec is not None):
            raise ValueError(f"mode {mode!r} with LoRA spec {spec}")
        self.model = model
        self.spec = spec
        self.mode = mode
        self.learning_rate = learning_rate
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        # LoRA checkpoints hold only the adapters; the base weights come from the base checkpoint.
        self.strict_loading = mode == "full"
        self.last_output: LossOutput | None = None
        self.last_grad_norm: torch.Tensor | None = None
        self.pending_rng: dict[str, Any] | None = None
        self.extra_checkpoint_state: dict[str, Any] = {}

    # ---- steps ----

    def compute_loss(self, batch: dict[str, torch.Tensor], counts: torch.Tensor | None = None) -> LossOutput:
        token_logits, codebook_logits = self.model(batch["inputs"], batch["labels"], batch["attention_masks"])
        return dual_ar_loss(
            token_logits,
            codebook_logits,
            batch["labels"],
            self.model.semantic_begin_id,
            self.model.semantic_end_id,
            counts=counts,
        )

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        world = self.trainer.world_size if self._trainer is not None else 1
        counts = None
        if world > 1:
            # the global number of targets (one small collective; asynchronous on GPUs)
            counts = target_counts(
                batch["labels"],
                self.model.semantic_begin_id,
                self.model.semantic_end_id,
                self.model.config.num_codebooks,
            )
            torch.distributed.all_reduce(counts)
        out = self.compute_loss(batch, counts)
        # logged: this rank's share of the global means (the monitor sums the shares)
        self.last_output = LossOutput(*(t.detach() for t in vars(out).values()))
        # DDP averages gradients over ranks; the shares must be summed, hence × world
        return out.loss * world if world > 1 else out.loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.pending_rng is not None:  # first batch after a resume: continue the saved RNG streams
            set_rng_states(self.pending_rng)
            self.pending_rng = None

    # ---- optimisation ----

    def configure_optimizers(self):
        # names as upstream's lit_module sees them ("model.<path>"), for its no-decay rule
        named = [(f"model.{n}", p) for n, p in self.model.named_parameters() if p.requires_grad]
        if not named:
            raise UserError("no trainable parameters: was LoRA set up, or is everything frozen?")

        def exempt(name: str) -> bool:
            return ".bias" in name or "norm.weight" in name or ".embeddings." in name

        no_decay = [p for n, p in named if exempt(n)]
        decay = [p for n, p in named if not exempt(n)]
        groups = [
            {"params": decay, "weight_decay": self.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(
            [g for g in groups if g["params"]],
            lr=self.learning_rate,
            betas=self.betas,
            eps=self.eps,
            fused=torch.cuda.is_available() and all(p.is_cuda for _, p in named),
        )
        warmup = self.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_factor(step, warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        params = [p for p in self.model.parameters() if p.requires_grad]
        max_norm = float(gradient_clip_val) if gradient_clip_val else float("inf")
        # returns the total norm before clipping, as a device tensor (no host sync)
        self.last_grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True).detach()

    # ---- checkpoints ----

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = get_rng_states()
        world = self.trainer.world_size if self._trainer is not None else 1
        checkpoint["rng_states"] = states  # rank 0's (what a single-process resume reads)
        if world > 1:
            gathered: list[Any] = [None] * world
            torch.distributed.all_gather_object(gathered, states)
            checkpoint["rng_states_by_rank"] = gathered
        if self.mode == "full":
            # Lightning already put `model.<name>` of every tensor there (upstream's layout without LoRA)
            checkpoint["fish_speech"] = {"mode": "full", **self.extra_checkpoint_state}
            return
        checkpoint["state_dict"] = {k: v.detach().cpu() for k, v in lora_state_dict(self.model).items()}
        checkpoint["fish_speech"] = {
            "mode": "lora",
            "lora_config": self.spec.to_dict(),
            **self.extra_checkpoint_state,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved_mode = checkpoint.get("fish_speech", {}).get("mode", "lora")
        if saved_mode != self.mode:
            raise UserError(
                f"the checkpoint to resume is from --mode {saved_mode} training, this run asks for --mode {self.mode}"
            )
        self.pending_rng = _rng_for_this_rank(checkpoint, self.global_rank, self.trainer.world_size)
        if self.mode == "full":
            return  # strict load of the full state dict by Lightning
        saved = checkpoint.get("fish_speech", {}).get("lora_config", {})
        if saved and (saved.get("r"), float(saved.get("alpha", 0))) != (self.spec.r, float(self.spec.alpha)):
            raise UserError(
                f"the checkpoint to resume was trained with LoRA r={saved.get('r')} alpha={saved.get('alpha')}, "
                f"this run asks for r={self.spec.r} alpha={self.spec.alpha}"
            )
        state = normalize_lora_keys(checkpoint["state_dict"])
        expected = lora_state_dict(self.model)
        if set(state) != set(expected):
            raise UserError(
                f"the checkpoint to resume holds {len(state)} LoRA tensors, this model has {len(expected)}"
            )
        checkpoint["state_dict"] = {"model." + k: v for k, v in to_internal_names(self.model, state).items()}


def _rng_for_this_rank(checkpoint: dict[str, Any], rank: int, world: int) -> dict[str, Any] | None:
    by_rank = checkpoint.get("rng_states_by_rank")
    if by_rank is not None and len(by_rank) == world:
        return by_rank[rank]
    if world > 1 or by_rank is not None:
        log.warning(
            "the checkpoint holds RNG states of %d rank(s), this run has %d: dropout masks will differ "
            "from an uninterrupted run",
            len(by_rank) if by_rank is not None else 1,
            world,
        )
    return checkpoint.get("rng_states")


def get_rng_states() -> dict[str, Any]:
    """Python, torch CPU and CUDA generator states (numpy is not used by training)."""
    states: dict[str, Any] = {
        "python": _python_state_to_list(random.getstate()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    if "cuda" in states and torch.cuda.is_available():
        cuda = states["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda])


def _python_state_to_list(state: tuple) -> list:
    # tuples of ints survive weights_only loading as lists; keep the shape explicit
    version, internal, gauss = state
    return [version, list(internal), gauss]


def prepare_full_finetuning(model: torch.nn.Module, freeze_embeddings: bool = False) -> int:
    """Make every slow and fast transformer weight trainable (optionally not the embedding tables).

    Returns the number of trainable parameters. With `tie_word_embeddings` the output head is the
    token embedding, so freezing the embeddings freezes it too.
    """
    frozen = {"embeddings", "codebook_embeddings", "fast_embeddings"} if freeze_embeddings else set()
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".", 1)[0] not in frozen)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
