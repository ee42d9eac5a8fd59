"""Fixtures of the reliability suite; helpers live in harness.py, bad inputs in corpus.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py, corpus.py, killer.py


@pytest.fixture(scope="session")
def tiny_codec(tmp_path_factory) -> Path:
    """A random codec checkpoint in the real layout with a tiny config (`codec.pth`)."""
    out = tmp_path_factory.mktemp("tiny-codec")
    from fish_speech.base_model.tiny import write_random_codec

    return write_random_codec(out / "codec.pth", None, 0)  # None = the tiny config
