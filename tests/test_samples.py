"""Training samples and collation against upstream's golden samples (tests/data/t2s/samples)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from fish_speech.dataset.protos import Semantics, Sentence, TextData, read_protos, write_protos
from fish_speech.errors import UserError
from fish_speech.text2semantic.samples import (
    IGNORE_INDEX,
    SampleStream,
    clean_text,
    collate,
    sentence_codes,
    sentence_tensors,
)
from fish_speech.text2semantic.tokenizer import FishTokenizer

DATA = Path(__file__).resolve().parent / "data" / "t2s"
PROTOS = DATA / "protos" / "00000000.protos"
GOLDEN = json.loads((DATA / "samples" / "samples.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok() -> FishTokenizer:
    return FishTokenizer.from_dir(DATA / "ckpt")


@pytest.fixture(scope="module")
def groups() -> list[TextData]:
    return list(read_protos(PROTOS))


def _group(name: str, *sentences: tuple[list[str], np.ndarray]) -> TextData:
    return TextData(
        source="folder",
        name=name,
        sentences=[
            Sentence(texts=texts, semantics=[Semantics(values=row.tolist()) for row in codes])
            for texts, codes in sentences
        ],
    )


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("  Hello, world!  ", "Hello, world!"),
        ("\u2018Quoted\u2019 text,,, with an emoji \U0001f600 and", "'Quoted' text, with an emoji  and"),
        ("flags \U0001f1fa\U0001f1f8 rocket \U0001f680 map \U0001f5fa end", "flags  rocket  map  end"),
        ("wait... what,, ok", "wait... what, ok"),
        ("\u201cdouble\u201d \u2764 kept", "\u201cdouble\u201d \u2764 kept"),
    ],
)
def test_clean_text(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean


def test_per_sentence_layout_matches_upstream(tok: FishTokenizer, groups: list[TextData]) -> None:
    expected = iter(GOLDEN["per_sentence"])
    count = 0
    for group in groups:
        for index, sentence in enumerate(group.sentences):
            gold = next(expected)
            assert (gold["group"], gold["sentence"]) == (group.name, index)
            text = clean_text(sentence.texts[0])
            assert text == gold["text"]
            tokens, labels = sentence_tensors(tok, text, sentence_codes(sentence))
            assert tokens.dtype == labels.dtype == torch.int64
            assert tokens.tolist() == gold["tokens"]
            assert labels.tolist() == gold["labels"]
            assert (labels != IGNORE_INDEX).long().tolist() == gold["label_mask"]
            assert tok.decode(tokens[0].tolist()) + "<|im_end|>" == gold["decoded"] + "<|im_end|>"
            count += 1
    assert count == len(GOLDEN["per_sentence"]) == 8


def test_label_structure(tok: FishTokenizer) -> None:
    codes = np.arange(4 * 7).reshape(4, 7) % 64
    tokens, labels = sentence_tensors(tok, "Hi there.", codes)
    row0 = labels[0]
    assert int((row0 != IGNORE_INDEX).sum()) == 7 + 1  # frames + closing <|im_end|>
    voice = int((tokens[0] == tok.voice_id).nonzero()[0, 0])
    assert int(row0[voice]) == tok.semantic_begin_id + codes[0, 0]  # <|voice|> predicts the first frame
    assert int(row0[-1]) == tok.im_end_id
    assert torch.equal(tokens[1:, voice + 1 :], torch.as_tensor(codes))  # inputs: codes at semantic positions
    assert torch.equal(
        labels[1:, voice : voice + 7], torch.as_tensor(codes)
    )  # labels: codes of the next frame
    assert torch.equal(labels[1:, -1], torch.zeros(4, dtype=torch.long))
    assert (labels[1:, :voice] == IGNORE_INDEX).all()


def test_skip_text_replaces_the_transcript(tok: FishTokenizer) -> None:
    codes = np.zeros((2, 3), dtype=np.int64)
    tokens, _ = sentence_tensors(tok, "Hello", codes, skip_text=True)
    assert "<|skip_text|><|im_end|>" in tok.decode(tokens[0].tolist())
    assert "Hello" not in tok.decode(tokens[0].tolist())


def test_bad_codes_are_rejected(tok: FishTokenizer) -> None:
    with pytest.raises(ValueError, match="semantic codes"):
        sentence_tensors(tok, "x", np.array([[4096]]))
    with pytest.raises(ValueError, match="num_codebooks, frames"):
        sentence_tensors(tok, "x", np.array([1, 2]))


def test_random_samples_match_upstream(tok: FishTokenizer, groups: list[TextData]) -> None:
    """Same group shuffle (seed 42) and RNG call order as upstream -> identical samples and batches."""
    stream = SampleStream(groups, tok, max_length=128, seed=GOLDEN["dataset_seed"], too_long="truncate")
    rng = random.Random(GOLDEN["seed"])  # upstream seeds the global `random` with the same seed
    samples = [stream.sample(rng) for _ in GOLDEN["samples"]]
    for ours, gold in zip(samples, GOLDEN["samples"], strict=True):
        assert ours["tokens"].tolist() == gold["tokens"]
        assert ours["labels"].tolist() == gold["labels"]
    for max_length, batch_size, folder in (
        (128, 2, DATA / "batch"),
        (4096, 4, DATA / "samples" / "batch-4096"),
    ):
        batch = collate(samples[:batch_size], tok.end_of_text_id, max_length)
        for key in ("inputs", "attention_masks", "labels"):
            ref = np.load(folder / f"{key}.npy")
            assert batch[key].numpy().dtype == ref.dtype
            assert np.array_equal(batch[key].numpy(), ref), key


def test_collate_pads_and_cuts(tok: FishTokenizer) -> None:
    a = {"tokens": torch.ones(3, 5, dtype=torch.long), "labels": torch.full((3, 5), 7)}
    b = {"tokens": torch.full((3, 9), 2, dtype=torch.long), "labels": torch.full((3, 9), 8)}
    batch = collate([a, b], pad_id=513, max_length=6)
    assert batch["inputs"].shape == (2, 3, 6) and batch["attention_masks"].shape == (2, 6)
    assert batch["inputs"][0, 0].tolist() == [1] * 5 + [513]
    assert batch["inputs"][0, 1:, 5].tolist() == [0, 0]
    assert batch["labels"][0, :, 5].tolist() == [IGNORE_INDEX] * 3
    assert batch["attention_masks"].tolist() == [[False] * 5 + [True], [False] * 6]
    assert (batch["inputs"][1] == 2).all()
    with pytest.raises(ValueError, match="codebooks"):
        collate([a, {"tokens": torch.ones(4, 2, dtype=torch.long), "labels": torch.ones(4, 2)}], 0, 8)
    with pytest.raises(ValueError, match="non-empty"):
        collate([], 0, 8)


def test_causal_window_is_contiguous(tok: FishTokenizer, groups: list[TextData]) -> None:
    spk1 = next(g for g in groups if g.name == "SPK1")
    stream = SampleStream([spk1], tok, max_length=40, seed=0, too_long="truncate")  # windows of 40 // 20 = 2
    per = [sentence_tensors(tok, clean_text(s.texts[0]), sentence_codes(s))[0] for s in spk1.sentences]
    windows = {i: torch.cat(per[i : i + 2], dim=1) for i in range(3)}
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        tokens = stream.sample(rng)["tokens"]
        match = [i for i, w in windows.items() if torch.equal(w, tokens)]
        assert len(match) == 1
        seen.add(match[0])
    assert seen == {0, 1, 2}


def test_non_causal_draws_with_replacement(tok: FishTokenizer, groups: list[TextData]) -> None:
    spk1 = next(g for g in groups if g.name == "SPK1")
    stream = SampleStream([spk1], tok, max_length=4096, seed=0, causal=False)
    per = [
        sentence_tensors(tok, clean_text(s.texts[0]), sentence_codes(s))[0].size(1) for s in spk1.sentences
    ]
    rng = random.Random(1)
    lengths = {stream.sample(rng)["tokens"].size(1) for _ in range(20)}
    assert len(lengths) > 1  # different multisets of 4 sentences
    assert all(4 * min(per) <= n <= 4 * max(per) for n in lengths)


def test_text_chosen_among_several(tok: FishTokenizer) -> None:
    (group,) = read_protos(DATA / "protos" / "lab-txt.protos")
    assert len(group.sentences) == 1 and len(group.sentences[0].texts) == 2
    stream = SampleStream([group], tok, max_length=4096, seed=0)
    rng = random.Random(0)
    texts = {tok.decode(stream.sample(rng)["tokens"][0].tolist()).split("<|im_end|>")[0] for _ in range(20)}
    assert len(texts) == 2


def test_stream_yields_from_workers(tok: FishTokenizer, groups: list[TextData]) -> None:
    stream = SampleStream(groups, tok, max_length=4096, seed=5)
    first = [s["tokens"] for s, _ in zip(stream, range(3), strict=False)]
    again = [s["tokens"] for s, _ in zip(stream, range(3), strict=False)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded: reproducible
    loader = DataLoader(
        stream, batch_size=2, num_workers=2, collate_fn=lambda s: collate(s, tok.end_of_text_id, 4096)
    )
    batches = [b for b, _ in zip(loader, range(4), strict=False)]
    assert all(b["inputs"].shape[:2] == (2, 5) for b in batches)
    # batches alternate between the two workers, whose RNGs differ
    assert not torch.equal(batches[0]["inputs"], batches[1]["inputs"])


def test_too_long_sentence_names_the_file(tok: FishTokenizer) -> None:
    with pytest.raises(
        UserError, match=r"00000000\.protos: group 'SPK1', sentence 2: 129 tokens .* max_length 128"
    ):
        SampleStream.from_files(PROTOS, tok, max_length=128)
    stream = SampleStream.from_files(PROTOS, tok, max_length=129)
    assert stream.num_codebooks == 4 and len(stream.groups) == 5


@pytest.mark.parametrize(
    "group, message",
    [
        (_group("g", ([], np.zeros((2, 3), dtype=np.int64))), "no transcript"),
        (_group("g", (["a"], np.full((2, 3), 4096))), "has no token"),
        (_group("g", (["a"], np.zeros((0, 3), dtype=np.int64))), "no semantic codes"),
        (
            _group("g", (["a"], np.zeros((2, 3), dtype=np.int64)), (["b"], np.zeros((3, 3), dtype=np.int64))),
            "codebooks",
        ),
        (_group("g"), "no sentences"),
    ],
)
def test_bad_groups_name_the_file(tok: FishTokenizer, tmp_path: Path, group: TextData, message: str) -> None:
    write_protos([group], tmp_path)
    with pytest.raises(UserError, match=message) as e:
        SampleStream.from_files(tmp_path, tok, max_length=4096)
    assert "00000000.protos" in str(e.value)


def test_ragged_codes_rows(tok: FishTokenizer) -> None:
    sentence = Sentence(texts=["a"], semantics=[Semantics(values=[1, 2]), Semantics(values=[1])])
    with pytest.raises(UserError, match="rows differ"):
        SampleStream([TextData(name="g", sentences=[sentence])], tok, max_length=4096, sources=["x.protos"])


def test_empty_groups_are_never_drawn(tok: FishTokenizer) -> None:
    good = _group("good", (["hello"], np.zeros((2, 3), dtype=np.int64)))
    stream = SampleStream([_group("empty"), good, _group("empty2")], tok, max_length=4096, seed=1)
    rng = random.Random(0)
    assert all(stream.sample(rng)["tokens"].size(1) > 0 for _ in range(50))


def test_from_files_shuffles_files_then_groups(
    tok: FishTokenizer, groups: list[TextData], tmp_path: Path
) -> None:
    # one group per file: the group order is the seeded shuffle of the sorted files, then of the groups
    for i, group in enumerate(groups):
        write_protos([group], tmp_path / f"f{i}")
    stream = SampleStream.from_files(tmp_path, tok, max_length=4096, seed=7)
    files = [f"f{i}" for i in range(len(groups))]
    random.Random(7).shuffle(files)
    names = [groups[int(f[1:])].name for f in files]
    random.Random(7).shuffle(names)
    assert [g.name for g in stream.groups] == names
    assert [groups[int(Path(s).parent.name[1:])].name for s in stream.sources] == names


def test_stream_pickles_for_spawned_workers(tok: FishTokenizer, groups: list[TextData]) -> None:
    import pickle

    stream = SampleStream(groups, tok, max_length=4096, seed=5)
    clone = pickle.loads(pickle.dumps(stream))
    a, b = random.Random(1), random.Random(1)
    assert torch.equal(stream.sample(a)["tokens"], clone.sample(b)["tokens"])
