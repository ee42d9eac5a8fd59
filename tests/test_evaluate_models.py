"""The ASR and speaker wrappers on tiny random models that our code writes in the real Hugging Face layout."""

import json

import numpy as np
import pytest

from fish_speech.errors import UserError
from fish_speech.evaluate.metrics import cosine_similarity
from fish_speech.evaluate.models import (
    ASRModel,
    SpeakerModel,
    fetch_model,
    to_model_rate,
    write_tiny_asr,
    write_tiny_speaker_model,
)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return fetch_model("tiny", root, "asr"), fetch_model("tiny", root, "speaker"), root


def test_tiny_models_have_the_real_layout(tiny_models):
    asr, speaker, _ = tiny_models
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "vocab.json",
    ):
        assert (asr / name).is_file(), name
    assert json.loads((asr / "config.json").read_text())["architectures"] == [
        "WhisperForConditionalGeneration"
    ]
    assert json.loads((speaker / "config.json").read_text())["architectures"] == ["WavLMForXVector"]
    assert (speaker / "preprocessor_config.json").is_file()
    assert (asr / "MANIFEST.sha256").is_file() and (speaker / "MANIFEST.sha256").is_file()
    assert not any(p.name.startswith(".tmp-") for p in asr.iterdir())


def test_tiny_fetch_is_reused_and_rewritten_when_damaged(tiny_models):
    asr, _, root = tiny_models
    before = (asr / "model.safetensors").stat().st_mtime_ns
    assert fetch_model("tiny", root, "asr") == asr
    assert (asr / "model.safetensors").stat().st_mtime_ns == before  # verified, not rewritten
    (asr / "config.json").write_text("{}")
    fetch_model("tiny", root, "asr")
    assert json.loads((asr / "config.json").read_text())["model_type"] == "whisper"


def test_asr_transcribes_a_batch_like_one_at_a_time(tiny_models, speech_like):
    asr = ASRModel(tiny_models[0])
    clips = [speech_like(1.0, 44100, seed=i)[:, 0] for i in range(3)] + [np.zeros(0, np.float32)]
    texts = asr.transcribe(clips, 44100, batch_size=4)
    assert len(texts) == 4 and all(isinstance(t, str) for t in texts)
    assert [asr.transcribe([c], 44100)[0] for c in clips] == texts


def test_speaker_embeddings_shape_and_determinism(tiny_models, speech_like):
    model = SpeakerModel(tiny_models[1])
    a, b = speech_like(1.0, 44100, seed=1)[:, 0], speech_like(1.5, 22050, seed=2)[:, 0]
    emb = model.embed([a, b, np.zeros(100, np.float32)], 44100)
    assert emb.shape == (3, model.model.config.xvector_output_dim)
    assert not np.any(emb[2])  # too short: a zero row, scored as similarity 0
    again = model.embed([a], 44100)
    assert cosine_similarity(emb[0], again[0]) == pytest.approx(1.0, abs=1e-6)


def test_resampling_to_16k(speech_like):
    x = speech_like(1.0, 44100)[:, 0]
    assert to_model_rate(x, 44100).shape == (16000,)
    assert to_model_rate(x[None], 16000).shape == (44100,)


def test_unloadable_models_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        fetch_model(str(tmp_path), tmp_path / "cache", "asr")
    broken = write_tiny_speaker_model(tmp_path / "spk")
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError) as e:
        SpeakerModel(broken)
    assert str(broken) in str(e.value) and "\n" not in str(e.value)
    asr = write_tiny_asr(tmp_path / "asr")
    (asr / "config.json").write_text('{"model_type": "nonsense-model"}')
    with pytest.raises(UserError, match="ASR model .*cannot load"):
        ASRModel(asr)
    with pytest.raises(UserError, match="speaker model"):
        fetch_model("ftp://x/y", tmp_path / "cache", "speaker")
