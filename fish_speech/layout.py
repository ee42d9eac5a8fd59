"""File names of a base-model (checkpoint) folder, as upstream's openaudio-s1-mini release has them.

The one place they are spelled: checks (`base_model/check.py`), loaders, writers and the pipeline
steps import them from here. Light on purpose (no torch).
"""

from __future__ import annotations

MODEL_FILE = "model.pth"  # text-to-semantic weights, a plain state dict
CONFIG_FILE = "config.json"  # text-to-semantic architecture
TOKENIZER_FILE = "tokenizer.tiktoken"
SPECIAL_TOKENS_FILE = "special_tokens.json"
CODEC_FILE = "codec.pth"  # the codec (VQ-GAN); only extract-vq and decode-vq open it
MANIFEST_FILE = "MANIFEST.sha256"  # written by fetch-weights / publish; checked when present

# What the text-to-semantic side reads from the folder.
TEXT2SEMANTIC_FILES: tuple[str, ...] = (MODEL_FILE, CONFIG_FILE, TOKENIZER_FILE, SPECIAL_TOKENS_FILE)
# What a complete base-model folder holds (the merged model has the same layout).
REQUIRED_FILES: tuple[str, ...] = (*TEXT2SEMANTIC_FILES, CODEC_FILE)
