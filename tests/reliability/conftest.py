"""Fixtures of the reliability suite; helpers live in harness.py, bad inputs in corpus.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, corpus.py, killer.py

from harness import fish_speech, require_commands  # noqa: E402


@pytest.fixture(scope="session")
def tiny_codec(tmp_path_factory) -> Path:
    """A random codec checkpoint in the real layout with a tiny config (`codec.pth`)."""
    out = tmp_path_factory.mktemp("tiny-codec")
    try:
        from fish_speech.codec import checkpoint
    except ModuleNotFoundError:
        checkpoint = None
    if checkpoint is not None and hasattr(checkpoint, "write_random_codec"):
        path = out / "codec.pth"
        checkpoint.write_random_codec(path, None, 0)  # None = the tiny config
        return path
    require_commands("fetch-weights")
    fish_speech("fetch-weights", "tiny", "--output", out / "base").check()
    return out / "base" / "codec.pth"
