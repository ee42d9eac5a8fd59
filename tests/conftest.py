"""Shared fixtures: the bundled demo voice and a helper that writes small test clips."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
DEMO_VOICE = REPO / "examples" / "demo-voice"


@pytest.fixture(scope="session")
def demo_voice() -> Path:
    """The committed demo voice (read-only: copy it before writing anything into it)."""
    if not DEMO_VOICE.is_dir():
        pytest.fail(f"{DEMO_VOICE} is missing: run examples/make_demo_voice.sh")
    return DEMO_VOICE


# Test modules take helpers as fixtures, never `from conftest import ...`: tests/reliability/ has
# its own conftest.py, and whichever pytest imported last owns the module name "conftest".


def _speech_like(seconds: float, sr: int, seed: int = 0, channels: int = 1, level: float = 0.3) -> np.ndarray:
    """A deterministic voiced-sounding signal (harmonics with a syllable envelope), (samples, channels)."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    f0 = 110.0 + 40.0 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random() * 6.28) / k for k in range(1, 8))
    env = 0.5 - 0.5 * np.cos(2 * np.pi * 3.0 * t)  # ~3 syllables per second
    x = x * env + 0.01 * rng.standard_normal(n)
    x = level * x / max(np.max(np.abs(x)), 1e-9)
    out = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    return out.astype(np.float32)


@pytest.fixture
def speech_like() -> Callable[..., np.ndarray]:
    """speech_like(seconds, sr, seed=0, channels=1, level=0.3) -> float32 (samples, channels)."""
    return _speech_like


@pytest.fixture
def write_clip() -> Callable[..., Path]:
    """write_clip(path, seconds=1.0, sr=44100, channels=1, text="hello", data=None, subtype=None, seed=0).

    Writes an audio file (format from the suffix) and, unless `text` is None, a `.lab` beside it.
    `data` (samples, channels) overrides the generated signal.
    """

    def _write(
        path: Path,
        seconds: float = 1.0,
        sr: int = 44100,
        channels: int = 1,
        text: str | None = "hello world",
        data: np.ndarray | None = None,
        subtype: str | None = None,
        seed: int = 0,
    ) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            data = _speech_like(seconds, sr, seed=seed, channels=channels)
        sf.write(path, data, sr, subtype=subtype)
        if text is not None:
            path.with_suffix(".lab").write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads thrash."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
