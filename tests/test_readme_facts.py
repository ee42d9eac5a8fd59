"""Figures the README states that the code can check: said once, and true."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_fetch_weights_tiny_codec_key_count(tmp_path):
    import torch

    from fish_speech.base_model.tiny import write_tiny_checkpoint
    from fish_speech.codec.checkpoint import expected_codec_state_dict_shapes
    from fish_speech.codec.model import CodecConfig

    stated = re.findall(r"`fetch-weights tiny` writes the (\d+)-key tiny codec", README)
    assert stated, "README no longer states the tiny codec's key count"
    write_tiny_checkpoint(tmp_path)
    keys = len(torch.load(tmp_path / "codec.pth", map_location="cpu", weights_only=True))
    assert {int(n) for n in stated} == {keys}
    assert "541-key" not in README.split("`fetch-weights tiny` writes")[1][:80]
    assert len(expected_codec_state_dict_shapes(CodecConfig.s1_mini())) == 541


def test_demo_wall_time_is_stated_once():
    """One measured figure for `make demo`, not several that disagree."""
    figures = set(re.findall(r"(?:ran locally in|`make demo`[^|\n]*\|[^|\n]*\|) *(\d+) s", README))
    figures |= set(re.findall(r"measured: (\d+) s", README))
    assert len(figures) == 1, figures
