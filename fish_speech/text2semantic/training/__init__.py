"""Training glue for LoRA fine-tuning: Lightning module, data split, checkpoints, metrics."""
