"""FishTokenizer against upstream's tokenizer vectors (tests/data/t2s/tokenizer/vectors.json)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fish_speech.base_model.tiny import train_tiny_bpe, write_tiny_tokenizer
from fish_speech.errors import UserError
from fish_speech.text2semantic.tokenizer import (
    DEFAULT_SPECIAL_TOKENS,
    FishTokenizer,
    read_ranks,
    write_ranks,
)

DATA = Path(__file__).resolve().parent / "data" / "t2s"
CKPT = DATA / "ckpt"
VECTORS = json.loads((DATA / "tokenizer" / "vectors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def tok() -> FishTokenizer:
    return FishTokenizer.from_dir(CKPT)


@pytest.mark.parametrize("entry", VECTORS["vectors"], ids=lambda e: repr(e["text"])[:30])
def test_encode_matches_upstream(tok: FishTokenizer, entry: dict) -> None:
    ids = tok.encode(entry["text"])
    assert ids == entry["ids"]
    assert tok.decode(ids) == entry["text"]
    assert [tok._encoding.decode_single_token_bytes(i).hex() for i in ids] == entry["token_bytes_hex"]


def test_special_ids(tok: FishTokenizer) -> None:
    tiny = VECTORS["tiny"]
    assert tok.num_ranks == tiny["bpe_ranks"] == 512
    assert len(tok.special_tokens) == tiny["num_special_tokens"] == 4111
    assert tok.semantic_begin_id == tiny["semantic_begin_id"]
    assert tok.semantic_id_end == tok.semantic_end_id == tiny["semantic_end_id"]
    assert tok.im_end_id == tiny["im_end_id"]
    assert tok.end_of_text_id == tiny["end_of_text_id"]
    assert tok.voice_id == tiny["voice_id"]
    assert tok.token_id("<|semantic:5|>") == tok.semantic_begin_id + 5


def test_s1_mini_sized_tokenizer(tmp_path: Path) -> None:
    """Upstream's S1-mini-sized synthetic tokenizer: same file bytes, S1-mini special ids, same encodings."""
    meta = VECTORS["s1mini_synthetic"]
    ranks = read_ranks(CKPT / "tokenizer.tiktoken")
    for i in range(meta["bpe_ranks"] - 512):
        ranks[b"\xff" + i.to_bytes(4, "big")] = 512 + i
    write_ranks(tmp_path / "tokenizer.tiktoken", ranks)
    data = (tmp_path / "tokenizer.tiktoken").read_bytes()
    assert len(data) == meta["tokenizer_tiktoken_bytes"]
    assert hashlib.sha256(data).hexdigest() == meta["tokenizer_tiktoken_sha256"]
    big = FishTokenizer.from_dir(tmp_path)  # no special_tokens.json: built-in list
    assert (big.semantic_begin_id, big.semantic_id_end) == (
        meta["semantic_begin_id"],
        meta["semantic_end_id"],
    )
    assert (big.im_end_id, big.end_of_text_id, big.voice_id) == (
        meta["im_end_id"],
        meta["end_of_text_id"],
        meta["voice_id"],
    )
    assert big.token_id("<|begin_of_text|>") == meta["first_special_id"] == 151643
    for entry in VECTORS["vectors"]:
        assert big.encode(entry["text"]) == entry["ids_s1mini_synthetic"]


def test_save_is_byte_identical_to_upstream(tok: FishTokenizer, tmp_path: Path) -> None:
    tok.save(tmp_path)
    for name in ("tokenizer.tiktoken", "special_tokens.json"):
        assert (tmp_path / name).read_bytes() == (CKPT / name).read_bytes()


def test_special_tokens_file_order_decides_ids(tmp_path: Path) -> None:
    shutil.copy(CKPT / "tokenizer.tiktoken", tmp_path)
    order = ["<|end_of_text|>", "<|im_end|>", "<|voice|>", "<|semantic:0|>", "<|semantic:1|>"]
    # the ids written in the file are ignored (recomputed as ranks + position), as upstream
    (tmp_path / "special_tokens.json").write_text(json.dumps({t: 0 for t in order}))
    tok = FishTokenizer.from_dir(tmp_path)
    assert tok.end_of_text_id == 512 and tok.im_end_id == 513 and tok.voice_id == 514
    assert (tok.semantic_begin_id, tok.semantic_id_end, tok.num_semantic_tokens) == (515, 516, 2)


def test_without_special_tokens_file_uses_builtin_list(tmp_path: Path) -> None:
    shutil.copy(CKPT / "tokenizer.tiktoken", tmp_path)
    tok = FishTokenizer.from_dir(tmp_path)
    assert list(tok.special_tokens) == DEFAULT_SPECIAL_TOKENS
    assert tok.semantic_begin_id == 527


def test_long_text_is_encoded_in_chunks(tok: FishTokenizer) -> None:
    text = "ab" * 250_001  # 500,002 chars: two chunks, split at an even position
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids == tok.encode(text[:400_000]) + tok.encode(text[400_000:])


@pytest.mark.parametrize(
    "content, message",
    [
        ("AA== 0\n   \n", "expected '<base64> <rank>'"),
        ("AA== 0 extra\n", "expected '<base64> <rank>'"),
        ("!!! 0\n", "bad tokenizer entry"),
        ("AA== x\n", "bad tokenizer entry"),
        ("AA== 1\n", "BPE ranks must be"),
        ("AA== 0\n", "every single byte"),
    ],
)
def test_bad_tiktoken_file_names_it(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokenizer.tiktoken"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        read_ranks(path)
    assert str(path) in str(e.value)


def test_empty_token_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    lines = (CKPT / "tokenizer.tiktoken").read_text().splitlines()
    path = tmp_path / "tokenizer.tiktoken"
    path.write_text("\n".join(lines[:10] + ["", "= 999"] + lines[10:]) + "\n")
    assert read_ranks(path) == read_ranks(CKPT / "tokenizer.tiktoken")


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="tokenizer.tiktoken"):
        FishTokenizer.from_dir(tmp_path)
    shutil.copy(CKPT / "tokenizer.tiktoken", tmp_path)
    (tmp_path / "special_tokens.json").write_text("{")
    with pytest.raises(UserError, match="special_tokens.json"):
        FishTokenizer.from_dir(tmp_path)
    (tmp_path / "special_tokens.json").write_text('{"<|im_end|>": 1}')
    with pytest.raises(UserError, match="semantic"):
        FishTokenizer.from_dir(tmp_path)


def test_tiny_tokenizer_in_real_format(tmp_path: Path) -> None:
    written = write_tiny_tokenizer(tmp_path)
    lines = (tmp_path / "tokenizer.tiktoken").read_text().splitlines()
    assert len(lines) == 512 and all(len(line.split()) == 2 for line in lines)
    assert [int(line.split()[1]) for line in lines] == list(range(512))
    specials = json.loads((tmp_path / "special_tokens.json").read_text())
    assert list(specials) == DEFAULT_SPECIAL_TOKENS and list(specials.values()) == list(range(512, 4623))
    tok = FishTokenizer.from_dir(tmp_path)
    assert tok.special_tokens == written.special_tokens and tok.semantic_begin_id == 527
    text = "Speak out the provided text.<|speaker:user|> Hello, world! 你好<|im_end|><|voice|><|semantic:7|>"
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids[-3:] == [tok.im_end_id, tok.voice_id, tok.semantic_begin_id + 7]
    assert len(ids) < len(text.encode()) - 20  # merges were learned: fewer tokens than bytes
    assert train_tiny_bpe() == train_tiny_bpe()  # deterministic


def test_fast_special_split_equals_tiktoken(tok: FishTokenizer) -> None:
    import random

    fragments = ["<|im_end|>", "<|semantic:7|>", "<|semantic:4096|>", "<|", "|>", "<", "|", ">", "<|x|>"]
    fragments += ["Hello", " world", "你好", "  ", "\n", "'s", "123", "?!", "<|voice|>", "<|speaker:user|>"]
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 12)))
        assert tok.encode(text) == tok._encoding.encode(text, allowed_special="all"), text
