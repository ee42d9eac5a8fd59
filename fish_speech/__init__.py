"""LoRA fine-tuning of Fish Speech / OpenAudio S1-mini's text-to-semantic model."""

__version__ = "0.1.0"
