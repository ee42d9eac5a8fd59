"""Fine-tuning of the text-to-semantic model, LoRA or full: `train(...) -> summary`.

Upstream's recipe (`fish_speech/train.py` with `text2semantic_finetune.yaml`) done correctly: the
base weights stay as loaded, a per-speaker validation split is scored every `val_every` steps, and
every checkpoint is a complete, atomically written training state that `resume=True` continues from
bit-for-bit (same data order, dropout masks, optimizer and schedule). The output folder holds
`checkpoints/step_*.ckpt`, `metrics.json`, `metrics.csv`, `loss.png`, `summary.json`, and for
`mode="full"` also `model/`, a complete checkpoint folder in the released layout.

Under `torchrun` every rank trains on its share of each global batch and rank 0 writes; SIGTERM or
SIGINT on any rank checkpoints the step in hand on all of them and exits 143 / 130
(`training/signals.py`, `training/distributed.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from fish_speech.errors import UserError
from fish_speech.fileio import atomic_write_text
from fish_speech.logs import quiet_lightning
from fish_speech.text2semantic.options import TrainOptions
from fish_speech.text2semantic.training.checkpoints import (
    CHECKPOINT_DIR,
    FULL_MODEL_DIR,
    checkpoint_name,
    find_resume_checkpoint,
    list_checkpoints,
    load_checkpoint,
    remove_temp_files,
)
from fish_speech.text2semantic.training.metrics import MetricsLog

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
# Lightning precision -> the dtype the matmuls run in (the stored dtype is logged by load_model)
COMPUTE_DTYPES = {
    "32-true": "float32",
    "bf16-mixed": "bfloat16",
    "bf16-true": "bfloat16",
    "16-mixed": "float16",
}


def resolve_precision(precision: str) -> str:
    """`auto` -> bf16-mixed on a CUDA GPU with bf16 support, else full fp32."""
    if precision == "32":
        return "32-true"
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def train(
    data: str | os.PathLike | Iterable[str | os.PathLike],
    base_weight: str | os.PathLike,
    output: str | os.PathLike,
    **options: Any,
) -> dict[str, Any]:
    """Train LoRA adapters; return the summary written to `output/summary.json`. See `TrainOptions`."""
    data_list = [os.fspath(data)] if isinstance(data, (str, os.PathLike)) else [os.fspath(d) for d in data]
    opts = TrainOptions(
        data=data_list, base_weight=os.fspath(base_weight), output=os.fspath(output), **options
    )
    return run_training(opts)


def run_training(opts: TrainOptions) -> dict[str, Any]:
    from fish_speech.text2semantic.training.distributed import init_process_group, world_from_env
    from fish_speech.text2semantic.training.signals import StopSignals

    opts.check()
    world = world_from_env()
    init_process_group(world, torch.cuda.is_available())
    # the signal handlers from here on: a SIGTERM while loading still ends in a checkpoint
    with StopSignals() as stop:
        return _train(opts, world, stop)


def _train(opts: TrainOptions, world, stop) -> dict[str, Any]:
    from lightning.pytorch.callbacks import TQDMProgressBar

    from fish_speech.text2semantic.checkpoint import check_dir, load_config, load_model, load_tokenizer
    from fish_speech.text2semantic.lora import count_trainable, resolve_lora_spec, setup_lora
    from fish_speech.text2semantic.training.data import BatchBuilder, TrainBatches, make_loader, prepare_data
    from fish_speech.text2semantic.training.distributed import check_all_ranks, from_rank_zero
    from fish_speech.text2semantic.training.module import TrainModule, prepare_full_finetuning
    from fish_speech.text2semantic.training.monitor import TrainingMonitor
    from fish_speech.text2semantic.training.signals import exit_status

    quiet_lightning()
    started = time.time()
    out = Path(opts.output)
    ckpt_dir = out / CHECKPOINT_DIR
    spec = (
        resolve_lora_spec(opts.lora_config, opts.lora_r, opts.lora_alpha, opts.lora_dropout)
        if opts.mode == "lora"
        else None
    )
    base = check_dir(opts.base_weight)
    config = load_config(base)
    tokenizer = load_tokenizer(base)
    cuda = torch.cuda.is_available()

    # ---- where to start: rank 0 decides, every rank must see the same checkpoint ----
    problem, resume_path = None, None
    try:
        resume_path = _prepare_output(out, ckpt_dir, opts, world.rank)
    except UserError as e:
        problem = str(e)
    check_all_ranks(problem)
    mine = resume_path.name if resume_path else None
    chosen = from_rank_zero(mine)
    check_all_ranks(
        None
        if chosen == mine
        else f"{ckpt_dir}: rank 0 resumes from {chosen}, this rank sees {mine or 'no checkpoint'}; --output "
        "must be storage that every node shares (a ReadWriteMany volume)"
    )
    resume_path = ckpt_dir / chosen if chosen else None
    start_step = 0
    if resume_path is not None:
        start_step = int(load_checkpoint(resume_path)["global_step"])
        if start_step >= opts.max_steps:
            log.info(
                "%s already reached step %d (max_steps %d): nothing to do",
                resume_path,
                start_step,
                opts.max_steps,
            )
            with contextlib.suppress(OSError, ValueError):  # the finished run's own summary
                return json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
            summary = _summary(out, opts, spec, None, {}, started, resumed_from=resume_path.name)
            if world.rank == 0:
                atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
            return summary
        log.info("resuming from %s (step %d)", resume_path, start_step)

    # ---- data ----
    max_length = opts.max_length
    split = prepare_data(
        opts.data, tokenizer, max_length, config.num_codebooks, config.codebook_size, opts.val_fraction
    )
    builder = BatchBuilder(split.train, tokenizer, max_length, opts.batch_size)
    val_batches = builder.validation_batches(split.val, opts.val_batches) if split.val else []
    dataset = TrainBatches(builder, opts.seed, start=start_step * opts.accumulate_grad_batches)
    log.info(
        "data: %d train sentences in %d groups, %d validation sentences, %d skipped; "
        "batch %d per rank × %d rank(s)",
        split.summary()["train_sentences"],
        len(split.train),
        split.summary()["val_sentences"],
        len(split.skipped),
        opts.batch_size,
        world.world_size,
    )

    # ---- model ----
    precision = resolve_precision(opts.precision)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if opts.mode == "lora":
        # frozen base weights may stay bf16; the adapters are fp32 (setup_lora)
        base_dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    else:
        # fp32 master weights under bf16-mixed autocast; bf16-true trains bf16 weights (asked for)
        base_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    model = load_model(base, device="cpu", dtype=base_dtype, max_seq_len=max(max_length, config.max_seq_len))
    model.train()
    # seeded: adapter init and dropout masks are reproducible (a resume restores the RNG state saved
    # with the checkpoint)
    torch.manual_seed(opts.seed)
    if spec is not None:
        setup_lora(model, spec)
        trainable = count_trainable(model)
        what = f"LoRA {spec.name}: {trainable:,} trainable parameters"
    else:
        trainable = prepare_full_finetuning(model, freeze_embeddings=opts.freeze_embeddings)
        what = f"full fine-tuning: {trainable:,} of {sum(p.numel() for p in model.parameters()):,} parameters trainable"
        what += " (embeddings frozen)" if opts.freeze_embeddings else ""
    log.info(
        "%s; precision %s: weights held in %s, computed in %s",
        what,
        precision,
        str(base_dtype).removeprefix("torch."),
        COMPUTE_DTYPES.get(precision, precision),
    )
    module = TrainModule(
        model,
        spec,
        mode=opts.mode,
        learning_rate=opts.learning_rate,
        eps=1e-5,
        weight_decay=opts.weight_decay,
        warmup_steps=opts.warmup_steps,
    )

    # ---- loop ----
    metrics = MetricsLog(out)
    metrics.load(up_to_step=start_step)
    if start_step:
        metrics.mark_resume(start_step)
    monitor = TrainingMonitor(
        metrics,
        ckpt_dir,
        max_steps=opts.max_steps,
        save_every=opts.save_every,
        val_every=opts.val_every or opts.save_every,
        keep_last=opts.keep_last,
        val_batches=val_batches,
        log_every=opts.log_every,
        stop=stop,
    )
    trainer = _make_trainer(opts, precision, [TQDMProgressBar(), monitor], out, world)
    monitor.dataset = dataset  # gets the rank and world size at fit start
    loader = make_loader(dataset, opts.num_workers, pin_memory=cuda)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume_path)
    if monitor.stopped_at is not None:
        import signal

        name = signal.Signals(monitor.stop_signal).name
        log.error(
            "%s: stopped at step %d of %d, checkpoint %s written; rerun with --resume to continue",
            name,
            monitor.stopped_at,
            opts.max_steps,
            checkpoint_name(monitor.stopped_at),
        )
        raise SystemExit(exit_status(monitor.stop_signal))

    extra: dict[str, Any] = {"trainable_parameters": trainable, "precision": precision, **split.summary()}
    extra["world_size"] = world.world_size
    summary = _summary(
        out, opts, spec, monitor, extra, started, resumed_from=resume_path.name if resume_path else None
    )
    if trainer.is_global_zero:
        if opts.mode == "full":
            summary.update(_export_full(out, base, summary))
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
        best = summary.get("best_checkpoint")
        kept = [s for s, _ in list_checkpoints(ckpt_dir)]
        best_step = next((s for s, p in list_checkpoints(ckpt_dir) if p.name == best), None)
        metrics.write(checkpoint_steps=kept, best_step=best_step)
    return summary


def _export_full(out: Path, base: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Full fine-tuning: write the best (else the last) checkpoint as the complete model folder."""
    from fish_speech.text2semantic.merge import export_full_checkpoint

    chosen = summary.get("best_checkpoint") or summary["last_checkpoint"]
    model_dir = export_full_checkpoint(out / CHECKPOINT_DIR / chosen, base, out / FULL_MODEL_DIR)
    return {"model_dir": str(model_dir), "model_from_checkpoint": chosen}


def _make_trainer(opts: TrainOptions, precision: str, callbacks: list, out: Path, world):
    """Lightning trainer: upstream's loop settings; our callback does validation, metrics and checkpoints."""
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    from fish_speech.text2semantic.training.checkpoints import make_checkpoint_io

    cuda = torch.cuda.is_available()
    devices = opts.devices
    num_nodes = 1
    gpus = torch.cuda.device_count() if cuda else 0
    multi = (devices in ("auto", -1) and gpus > 1) or (isinstance(devices, int) and devices > 1)
    strategy: Any = "ddp" if multi else "auto"
    if world.distributed:  # torchrun: its world, not --devices
        devices, num_nodes = world.local_world_size, world.num_nodes
        strategy = DDPStrategy(process_group_backend="nccl" if cuda else "gloo")
    return L.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=devices,
        num_nodes=num_nodes,
        strategy=strategy,
        precision=precision,
        max_steps=opts.max_steps,
        max_epochs=-1,
        accumulate_grad_batches=opts.accumulate_grad_batches,
        gradient_clip_val=opts.gradient_clip,
        gradient_clip_algorithm="norm",
        limit_val_batches=0,  # validation runs in TrainingMonitor, before each checkpoint
        num_sanity_val_steps=0,
        enable_checkpointing=False,  # TrainingMonitor writes them (atomically, with the val loss)
        logger=False,  # metrics.json / metrics.csv instead
        callbacks=callbacks,
        plugins=[make_checkpoint_io()],
        enable_model_summary=False,
        default_root_dir=out,
    )


def _prepare_output(out: Path, ckpt_dir: Path, opts: TrainOptions, rank: int | None = None) -> Path | None:
    """Create the output folder; return the checkpoint to resume from, if any (rank 0 alone deletes)."""
    rank = _launcher_rank() if rank is None else rank
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        remove_temp_files(ckpt_dir)
    existing = list_checkpoints(ckpt_dir)
    if opts.overwrite and rank == 0:  # DDP re-runs this in every rank: only rank 0 deletes
        for _, p in existing:
            p.unlink()
        for name in ("metrics.json", "metrics.csv", "loss.png", SUMMARY_FILE):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return None
    if opts.overwrite:
        return None
    if not opts.resume:
        if existing:
            raise UserError(
                f"{ckpt_dir}: holds checkpoints of an earlier run; pass --resume to continue it "
                "or --overwrite to start again"
            )
        return None
    path = find_resume_checkpoint(ckpt_dir)
    if path is None and existing:
        raise UserError(f"{ckpt_dir}: none of the {len(existing)} checkpoints is complete; cannot resume")
    return path


def _launcher_rank() -> int:
    """Global rank set by a distributed launcher (0 when not distributed)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def _summary(
    out: Path,
    opts: TrainOptions,
    spec,
    monitor,
    extra: dict[str, Any],
    started: float,
    resumed_from: str | None,
) -> dict[str, Any]:
    metrics = MetricsLog(out)
    metrics.load(up_to_step=10**12)
    found = list_checkpoints(out / CHECKPOINT_DIR)
    steps = {s for s, _ in found}
    best = metrics.best_val(steps)
    train_rows = [metrics.train[s] for s in sorted(metrics.train)]
    val_rows = [metrics.val[s] for s in sorted(metrics.val)]
    speeds = [r["tokens_per_s"] for r in train_rows if r.get("tokens_per_s")]
    name = {s: p.name for s, p in found}
    summary = {
        "steps": max(steps) if steps else 0,
        "max_steps": opts.max_steps,
        "final_train_loss": train_rows[-1]["loss"] if train_rows else None,
        "final_val_loss": val_rows[-1]["loss"] if val_rows else None,
        "best_val_loss": best[1] if best else None,
        "best_checkpoint": name[best[0]] if best else None,
        "earliest_checkpoint": found[0][1].name if found else None,
        "last_checkpoint": found[-1][1].name if found else None,
        "checkpoints": [p.name for _, p in found],
        "tokens_per_s": sum(speeds) / len(speeds) if speeds else None,
        "step_time_s": (
            sum(r["step_time_s"] for r in train_rows if r.get("step_time_s")) / len(train_rows)
            if train_rows
            else None
        ),
        "truncated_samples": monitor.truncated if monitor else None,
        "resumed_from": resumed_from,
        "mode": opts.mode,
        "lora": spec.to_dict() if spec is not None else None,
        "wall_time_s": round(time.time() - started, 3),
        "options": asdict(opts),
        **extra,
    }
    if best is None and found:
        summary["best_checkpoint_note"] = "no validation loss (no validation split)"
    return summary
