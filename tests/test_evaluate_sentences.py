"""Held-out sentences for evaluation: exactly train's validation split, prompts from training clips."""

import shutil

import numpy as np
import pytest

from fish_speech.base_model.tiny import write_tiny_checkpoint
from fish_speech.dataset.build_dataset import build_dataset
from fish_speech.dataset.protos import read_protos
from fish_speech.errors import UserError
from fish_speech.evaluate.sentences import select_sentences
from fish_speech.text2semantic.checkpoint import load_config, load_tokenizer
from fish_speech.text2semantic.training.data import check_sentences, split_validation


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("base"))


def _with_codes(src, dst, frames_per_clip=None, seed=0):
    """Copy a clip folder and put random codes (10 codebooks) beside every clip."""
    shutil.copytree(src, dst)
    rng = np.random.default_rng(seed)
    for i, lab in enumerate(sorted(dst.rglob("*.lab"))):
        frames = frames_per_clip[i] if frames_per_clip else 20 + 7 * i
        np.save(lab.with_suffix(".npy"), rng.integers(0, 1024, size=(10, frames)).astype(np.int64))
    return dst


def _args(base):
    config = load_config(base)
    return load_tokenizer(base), 4096, config.num_codebooks, config.codebook_size


def test_held_out_sentences_are_trains_validation_split(tmp_path, demo_voice, tiny_base):
    data = _with_codes(demo_voice, tmp_path / "data")
    tokenizer, max_length, books, size = _args(tiny_base)
    build_dataset([data], tmp_path / "protos", num_workers=1)
    groups, _ = check_sentences(list(read_protos(tmp_path / "protos")), tokenizer, max_length, books, size)
    _, val = split_validation(groups, 0.25)
    expected = [(g.name, s.texts[0]) for g in val for s in g.sentences]  # 2 per speaker

    chosen = select_sentences(data, 0.25, tokenizer, max_length, books, size, max_sentences=3)
    assert len(expected) == 4
    # round-robin: anna's first, ben's first, anna's second
    assert [(c.speaker, c.text) for c in chosen.sentences] == [expected[0], expected[2], expected[1]]
    for c in chosen.sentences:
        assert c.audio_path is not None and c.audio_path.stem == c.codes_path.stem
    held_out = {c.codes_path for refs in chosen.references.values() for c in refs}
    assert len(held_out) == 4
    for speaker, prompt in chosen.prompts.items():
        assert prompt.speaker == speaker
        assert prompt.codes_path not in held_out  # never a scored clip
    assert not chosen.seen_in_training and not chosen.notes


def test_no_held_out_clips_falls_back_to_a_training_clip(tmp_path, demo_voice, tiny_base):
    data = _with_codes(demo_voice, tmp_path / "data")
    tokenizer, max_length, books, size = _args(tiny_base)
    chosen = select_sentences(data, 0.0, tokenizer, max_length, books, size, max_sentences=8)
    assert chosen.seen_in_training == {"anna", "ben"}
    assert len(chosen.sentences) == 2
    assert all("seen in training" in n for n in chosen.notes)
    for s in chosen.sentences:
        assert chosen.prompts[s.speaker].codes_path != s.codes_path


def test_a_speaker_with_one_clip_is_skipped_with_a_reason(tmp_path, demo_voice, tiny_base):
    data = tmp_path / "data"
    (data / "solo").mkdir(parents=True)
    for name in ("a01.wav", "a01.lab"):
        shutil.copy(demo_voice / "anna" / name, data / "solo" / name)
    _with_codes(data, tmp_path / "copy")
    tokenizer, max_length, books, size = _args(tiny_base)
    with pytest.raises(UserError, match="only 1 usable clip"):
        select_sentences(tmp_path / "copy", 0.1, tokenizer, max_length, books, size)
    with pytest.raises(UserError, match="no clip with codes"):
        select_sentences(data, 0.1, tokenizer, max_length, books, size)  # no .npy beside the clips
    with pytest.raises(UserError, match="not found"):
        select_sentences(tmp_path / "nope", 0.1, tokenizer, max_length, books, size)


def test_codes_in_separate_folders_as_build_dataset_codes(tmp_path, demo_voice, tiny_base):
    """extract-vq --output-dir shards: codes under code folders at the clips' relative paths."""
    data = tmp_path / "data"
    shutil.copytree(demo_voice, data)
    with_codes = _with_codes(demo_voice, tmp_path / "beside")
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    for i, npy in enumerate(sorted(with_codes.rglob("*.npy"))):
        dest = shards[i % 2] / npy.relative_to(with_codes)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(npy, dest)
    tokenizer, max_length, books, size = _args(tiny_base)
    beside = select_sentences(with_codes, 0.25, tokenizer, max_length, books, size, max_sentences=4)
    split = select_sentences(
        data, 0.25, tokenizer, max_length, books, size, max_sentences=4, code_roots=shards
    )
    assert [(c.speaker, c.text, c.frames) for c in split.sentences] == [
        (c.speaker, c.text, c.frames) for c in beside.sentences
    ]
    for c in split.sentences:
        assert c.audio_path.is_relative_to(data)
        assert any(c.codes_path.is_relative_to(shard) for shard in shards)
