"""Lightning callback: per-step metrics, validation, checkpoints and their retention.

Per-step values stay on the device until a flush (every `log_every` steps, and before each validation
or checkpoint), which converts them in one transfer: no host synchronisation in the hot loop. Tokens
per second and step time are measured over each flush window. At every `val_every` steps the held-out
batches are scored; at every `save_every` steps (and the last) a checkpoint is written, after that
step's validation, so it carries its own validation loss. When a stop signal reached any rank
(`signals.StopSignals`), the step in hand is checkpointed and the loop stops (`stopped_at`).

Distributed, every rank calls the same collectives at the same steps: the stop agreement after each
optimizer step, the metric reduction at each flush, validation, and the checkpoint's RNG gather.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from fish_speech.text2semantic.training.checkpoints import (
    checkpoint_name,
    list_checkpoints,
    prune_checkpoints,
)
from fish_speech.text2semantic.training.data import move_batch
from fish_speech.text2semantic.training.metrics import MetricsLog
from fish_speech.text2semantic.training.module import TrainModule, warmup_factor
from fish_speech.text2semantic.training.signals import StopSignals

log = logging.getLogger(__name__)


class TrainingMonitor(L.Callback):
    def __init__(
        self,
        metrics: MetricsLog,
        ckpt_dir: Path,
        max_steps: int,
        save_every: int,
        val_every: int,
        keep_last: int,
        val_batches: list[dict[str, Any]],
        log_every: int = 10,
        stop: StopSignals | None = None,
    ) -> None:
        self.metrics = metrics
        self.ckpt_dir = Path(ckpt_dir)
        self.max_steps = max_steps
        self.save_every = save_every
        self.val_every = val_every
        self.keep_last = keep_last
        self.val_batches = val_batches
        self.log_every = max(1, log_every)
        self.last_step = 0
        self.micro: list[torch.Tensor] = []
        self.micro_tokens = 0
        self.pending: list[tuple[int, torch.Tensor, int, float]] = []
        self.window_start = 0.0
        self.truncated = 0
        self.tokens_total = 0
        self.train_seconds = 0.0
        self.dataset: Any = None
        self.stop = stop or StopSignals()
        self.stopped_at: int | None = None
        self.stop_signal = 0

    # ---- the loop ----

    def on_fit_start(self, trainer: L.Trainer, pl_module: TrainModule) -> None:
        if self.dataset is not None:  # each rank builds its share of every global batch
            self.dataset.rank = trainer.global_rank
            self.dataset.world_size = trainer.world_size

    def on_train_start(self, trainer: L.Trainer, pl_module: TrainModule) -> None:
        self.stop.install()  # after Lightning registered its SIGTERM handler: replace it
        self.last_step = trainer.global_step
        self.window_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: TrainModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        out = pl_module.last_output
        grad_norm = pl_module.last_grad_norm
        self.micro.append(
            torch.stack(
                [
                    out.loss.float(),
                    out.base_loss.float(),
                    out.semantic_loss.float(),
                    out.top5_hits.float(),
                    out.top5_count.float(),
                    (grad_norm if grad_norm is not None else torch.zeros((), device=out.loss.device)).float(),
                ]
            )
        )
        self.micro_tokens += int(batch.get("num_tokens", 0))
        self.truncated += int(batch.get("num_truncated", 0))
        step = trainer.global_step
        if step == self.last_step:  # still accumulating gradients
            return
        self.last_step = step
        values = torch.stack(self.micro)
        # losses averaged over the micro-batches of this step; accuracy counts summed; norm of the step
        row = torch.cat([values[:, :3].mean(0), values[:, 3:5].sum(0), values[-1:, 5]])
        lr = pl_module.learning_rate * warmup_factor(step - 1, pl_module.warmup_steps)
        self.pending.append((step, row, self.micro_tokens, lr))
        self.micro, self.micro_tokens = [], 0

        val_due = bool(self.val_batches) and (step % self.val_every == 0 or step == self.max_steps)
        save_due = step % self.save_every == 0 or step == self.max_steps
        signum = self.stop.agreed(trainer.world_size)
        if signum and step < self.max_steps:
            # keep this step's work (a preempted node has seconds); validation waits for the rerun
            self.flush(trainer)
            self.save(trainer, pl_module, step)
            self.stopped_at, self.stop_signal = step, signum
            trainer.should_stop = True
            return
        if step % self.log_every == 0 or val_due or save_due:
            self.flush(trainer)
        if val_due:
            self.validate(trainer, pl_module, step)
        if save_due:
            self.save(trainer, pl_module, step)
        if val_due or save_due:
            self.window_start = time.perf_counter()  # step times exclude validation and saving

    def flush(self, trainer: L.Trainer) -> None:
        """Move the pending per-step values to the host in one go and record them."""
        if not self.pending:
            return
        rows = torch.stack([r for _, r, _, _ in self.pending])
        if trainer.world_size > 1:
            # each rank holds its share of the global means (see TrainModule.training_step) and
            # its own counts: their sum is the step's value; the gradient norm is the same everywhere
            tokens = torch.tensor([t for _, _, t, _ in self.pending], dtype=rows.dtype, device=rows.device)
            both = trainer.strategy.reduce(torch.cat([rows, tokens[:, None]], 1), reduce_op="sum")
            rows, tokens = both[:, :-1], both[:, -1]
            rows[:, 5] /= trainer.world_size
            self.pending = [
                (s, r, int(t), lr) for (s, r, _, lr), t in zip(self.pending, tokens.tolist(), strict=True)
            ]
        values = rows.tolist()  # the one sync per window
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        self.window_start = now
        self.train_seconds += elapsed
        tokens = sum(t for _, _, t, _ in self.pending)
        self.tokens_total += tokens
        per_step = elapsed / len(self.pending)
        for (step, _, tok, lr), (loss, base, sem, hits, count, norm) in zip(
            self.pending, values, strict=True
        ):
            self.metrics.add_train(
                step,
                {
                    "loss": loss,
                    "base_loss": base,
                    "semantic_loss": sem,
                    "top5_accuracy": hits / count if count else None,
                    "lr": lr,
                    "grad_norm": norm,
                    "tokens": tok,
                    "step_time_s": per_step,
                    "tokens_per_s": tokens / elapsed,
                },
            )
        step, loss = self.pending[-1][0], values[-1][0]
        log.info(
            "step %d/%d  loss %.4f  %.3f s/step  %.0f tokens/s",
            step,
            self.max_steps,
            loss,
            per_step,
            tokens / elapsed,
        )
        self.pending = []
        if trainer.is_global_zero:
            self.metrics.write(plot=False)

    # ---- validation ----

    @torch.no_grad()
    def validate(self, trainer: L.Trainer, pl_module: TrainModule, step: int) -> dict[str, float]:
        model = pl_module.model
        was_training = model.training
        model.eval()
        rank, world = trainer.global_rank, trainer.world_size
        sums = torch.zeros(6, device=pl_module.device)
        try:
            with trainer.precision_plugin.forward_context():
                for batch in self.val_batches[rank::world]:
                    out = pl_module.compute_loss(move_batch(batch, pl_module.device))
                    sums += torch.stack(
                        [
                            out.loss.float(),
                            out.base_loss.float(),
                            out.semantic_loss.float(),
                            out.top5_hits.float(),
                            out.top5_count.float(),
                            torch.ones((), device=sums.device),
                        ]
                    )
        finally:
            model.train(was_training)
        sums = trainer.strategy.reduce(sums, reduce_op="sum")
        loss, base, sem, hits, count, batches = sums.tolist()
        values = {
            "loss": loss / max(batches, 1),
            "base_loss": base / max(batches, 1),
            "semantic_loss": sem / max(batches, 1),
            "top5_accuracy": hits / count if count else None,
        }
        self.metrics.add_val(step, values)
        log.info("step %d  validation loss %.4f (%d batches)", step, values["loss"], int(batches))
        return values

    # ---- checkpoints ----

    def save(self, trainer: L.Trainer, pl_module: TrainModule, step: int) -> None:
        val = self.metrics.val.get(step, {}).get("loss")
        train = self.metrics.train.get(step, {}).get("loss")
        pl_module.extra_checkpoint_state = {"step": step, "val_loss": val, "train_loss": train}
        path = self.ckpt_dir / checkpoint_name(step)
        trainer.save_checkpoint(path, weights_only=False)
        log.info("saved %s", path)
        if trainer.is_global_zero:
            steps = [s for s, _ in list_checkpoints(self.ckpt_dir)]
            protect = {steps[0]} if steps else set()
            best = self.metrics.best_val(set(steps))
            if best is not None:
                protect.add(best[0])
            prune_checkpoints(self.ckpt_dir, self.keep_last, protect)
            kept = [s for s, _ in list_checkpoints(self.ckpt_dir)]
            self.metrics.write(checkpoint_steps=kept, best_step=best[0] if best else None)
