"""The base-model folder (model.pth, config.json, tokenizer files, codec.pth; names in `fish_speech.layout`).

`check.py` checks a folder before GPU time is spent on it; `tiny.py` writes random tiny ones in the real
layout (tests, the demo, `fetch-weights tiny`).
"""
