"""The protos stream: record format, sharding, atomic reruns, reader, generated module."""

from __future__ import annotations

import importlib.util
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fish_speech.dataset.protos import (
    Semantics,
    Sentence,
    TextData,
    encode_record,
    expand_braces,
    list_proto_files,
    read_protos,
    read_protos_file,
    write_protos,
)
from fish_speech.errors import UserError

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "data" / "protos" / "expected" / "protos" / "00000000.protos"
REPO = HERE.parent


def group(name: str, sentences: int = 1, frames: int = 5) -> TextData:
    return TextData(
        source="folder",
        name=name,
        sentences=[
            Sentence(
                texts=[f"{name} {i}"], semantics=[Semantics(values=list(range(frames))) for _ in range(2)]
            )
            for i in range(sentences)
        ],
    )


def test_golden_file_reads_back_as_upstream_wrote_it():
    groups = list(read_protos(GOLDEN))
    assert [(g.source, g.name, len(g.sentences)) for g in groups] == [
        ("folder", "SPK1", 4),
        ("folder", "SPK2", 1),
        ("folder", "nested", 1),
        ("folder", "SPK4", 1),
        ("folder", "data", 1),
    ]
    first = groups[0].sentences[0]
    assert list(first.texts) == ["Hello, world! This is bold text."]
    assert len(first.semantics) == 4 and len(first.semantics[0].values) == 54
    # Re-encoding every record gives the file back byte for byte.
    assert b"".join(encode_record(g) for g in groups) == GOLDEN.read_bytes()


def test_record_is_little_endian_length_then_message():
    record = encode_record(TextData(source="folder", name="SPK1"))
    assert record[:4] == struct.pack("<I", len(record) - 4)
    assert record[4:] == b"\x0a\x06folder\x12\x04SPK1"
    # Repeated-field elements are written even when empty (spec §11 item 1); empty singulars are not.
    sentence = Sentence(texts=[""], semantics=[Semantics()])
    assert sentence.SerializeToString() == b"\x0a\x00\x1a\x00"
    assert TextData(source="", name="").SerializeToString() == b""


def test_roundtrip_and_sharding(tmp_path):
    groups = [group(f"g{i}", sentences=3, frames=200) for i in range(7)]
    size = len(encode_record(groups[0]))
    # Threshold between 2 and 3 records: a shard closes after the record that exceeds it.
    shards = write_protos(groups, tmp_path, shard_size_mb=(2.5 * size) / (1024 * 1024))
    assert [p.name for p in shards] == ["00000000.protos", "00000001.protos", "00000002.protos"]
    assert [len(list(read_protos_file(p))) for p in shards] == [3, 3, 1]
    assert list(read_protos(tmp_path)) == groups
    # A group larger than the threshold goes whole into the open shard, which then closes.
    shards = write_protos(groups[:3], tmp_path / "tiny", shard_size_mb=1e-6)
    assert [len(list(read_protos_file(p))) for p in shards] == [1, 1, 1]


def test_rerun_replaces_shards_and_removes_stale_ones(tmp_path):
    write_protos([group(f"g{i}", frames=300) for i in range(5)], tmp_path, shard_size_mb=1e-6)
    assert len(list(tmp_path.glob("*.protos"))) == 5
    (tmp_path / "notes.txt").write_text("kept")
    (tmp_path / ".tmp-00000000.protos.abc").write_bytes(b"left by a killed run")
    shards = write_protos([group("new")], tmp_path, shard_size_mb=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000000.protos", "notes.txt"]
    assert [g.name for g in read_protos(shards)] == ["new"]


def test_failed_write_keeps_previous_output(tmp_path):
    write_protos([group("old")], tmp_path)
    before = (tmp_path / "00000000.protos").read_bytes()

    def groups():
        yield group("new1")
        yield group("new2")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_protos(groups(), tmp_path, shard_size_mb=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000000.protos"]
    assert (tmp_path / "00000000.protos").read_bytes() == before


def test_no_groups_writes_no_file(tmp_path):
    write_protos([group("old")], tmp_path)
    assert write_protos([], tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    data = encode_record(group("a")) + encode_record(group("b"))
    for cut, what in [
        (len(data) - 3, "truncated"),
        (len(encode_record(group("a"))) + 2, "partial length prefix"),
    ]:
        path = tmp_path / f"cut{cut}.protos"
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=rf"cut{cut}\.protos.*{what}"):
            list(read_protos(path))
    bad = tmp_path / "bad.protos"
    bad.write_bytes(struct.pack("<I", 3) + b"\xff\xff\xff")
    with pytest.raises(UserError, match=r"bad\.protos: corrupt protos record 0"):
        list(read_protos(bad))


def test_reader_accepts_files_folders_and_brace_patterns(tmp_path):
    for sub, name in [("a", "x.protos"), ("b/deep", "y.proto"), ("c", "z.protos")]:
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / name).write_bytes(encode_record(group(f"{sub}/{name}")))
    (tmp_path / "a" / "ignored.txt").write_text("not a protos file")
    (tmp_path / "a" / ".tmp-x.protos.123").write_bytes(b"partial")
    assert [g.name for g in read_protos(tmp_path)] == ["a/x.protos", "b/deep/y.proto", "c/z.protos"]
    assert [g.name for g in read_protos(f"{tmp_path}/{{c,a}}")] == ["a/x.protos", "c/z.protos"]
    assert [g.name for g in read_protos([tmp_path / "c" / "z.protos", str(tmp_path / "b")])] == [
        "b/deep/y.proto",
        "c/z.protos",
    ]
    assert list_proto_files([tmp_path / "a", tmp_path / "a" / "x.protos"]) == [tmp_path / "a" / "x.protos"]
    with pytest.raises(UserError, match="missing"):
        list(read_protos(tmp_path / "missing"))


def test_expand_braces():
    assert expand_braces("data/{a,b}/x") == ["data/a/x", "data/b/x"]
    assert expand_braces("{a,b}{1,2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("d/{a,{b,c}d}") == ["d/a", "d/bd", "d/cd"]
    assert expand_braces("plain/{x}") == ["plain/{x}"]
    assert expand_braces("no/braces") == ["no/braces"]


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools not installed")
def test_generated_module_is_reproducible_from_the_schema(tmp_path):
    """What `make protos` runs regenerates the committed text_data_pb2.py byte for byte."""
    dataset = REPO / "fish_speech" / "dataset"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{dataset}",
            f"--python_out={tmp_path}",
            "text_data.proto",
        ],
        check=True,
        cwd=REPO,
    )
    assert (tmp_path / "text_data_pb2.py").read_bytes() == (dataset / "text_data_pb2.py").read_bytes()
    makefile = (REPO / "Makefile").read_text()
    assert "grpc_tools.protoc -Ifish_speech/dataset --python_out=fish_speech/dataset" in makefile


def test_schema_field_numbers():
    fields = {
        (m.name, f.name): (f.number, f.is_repeated, f.type)
        for m in TextData.DESCRIPTOR.file.message_types_by_name.values()
        for f in m.fields
    }
    assert TextData.DESCRIPTOR.file.package == "text_data"
    assert {k: v[0] for k, v in fields.items()} == {
        ("Semantics", "values"): 1,
        ("Sentence", "texts"): 1,
        ("Sentence", "semantics"): 3,
        ("TextData", "source"): 1,
        ("TextData", "name"): 2,
        ("TextData", "sentences"): 4,
        ("SampledData", "source"): 1,
        ("SampledData", "name"): 2,
        ("SampledData", "samples"): 3,
    }
    values = Semantics.DESCRIPTOR.fields_by_name["values"]
    assert (
        values.type == values.TYPE_UINT32
        and Semantics(values=[1, 2]).SerializeToString() == b"\x0a\x02\x01\x02"
    )
