"""`fish-speech build-dataset`: byte parity with upstream, determinism, skips, filelists, reruns."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import fish_speech.dataset.build_dataset as bd
from fish_speech.cli import main
from fish_speech.dataset.build_dataset import build_dataset, clean_build_text
from fish_speech.dataset.protos import read_protos
from fish_speech.errors import UserError

HERE = Path(__file__).resolve().parent / "data" / "protos"


@pytest.fixture(autouse=True)
def pool_even_for_few_clips(monkeypatch):
    """Use worker processes whenever more than one is asked for, so the tests exercise the pool."""
    monkeypatch.setattr(bd, "MIN_CLIPS_FOR_WORKERS", 2)


@pytest.fixture
def golden_data(tmp_path) -> Path:
    """A writable copy of the golden input folder, named `data` as upstream's run saw it."""
    data = tmp_path / "data"
    shutil.copytree(HERE / "data", data)
    return data


def codes(frames: int, rows: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 64, size=(rows, frames), dtype=np.int64)


def clip(
    folder: Path, stem: str, text: str | None = "some words", frames: int = 10, seed: int = 0, rows: int = 4
):
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"{stem}.npy", codes(frames, rows, seed))
    if text is not None:
        (folder / f"{stem}.lab").write_text(text, encoding="utf-8")


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        (["--text-extension", ".lab"], "protos"),
        (["--text-extension", ".lab", "--text-extension", ".txt"], "protos-lab-txt"),
    ],
)
@pytest.mark.parametrize("workers", ["1", "3"])
def test_byte_identical_to_upstream(golden_data, tmp_path, monkeypatch, extensions, expected, workers):
    monkeypatch.chdir(tmp_path)  # relative paths, as upstream was run
    out = Path("data/protos")
    assert (
        main(
            ["build-dataset", "--input", "data", "--output", str(out), "--num-workers", workers, *extensions]
        )
        == 0
    )
    assert [p.name for p in (tmp_path / out).iterdir()] == ["00000000.protos"]
    assert (tmp_path / out / "00000000.protos").read_bytes() == (
        HERE / "expected" / expected / "00000000.protos"
    ).read_bytes()


def test_rerun_into_the_input_folder_is_identical(golden_data, monkeypatch):
    monkeypatch.chdir(golden_data.parent)
    for _ in range(2):  # the second run sees data/protos/ inside its input and must not change
        build_dataset(["data"], "data/protos", [".lab"], num_workers=1)
        assert (golden_data / "protos" / "00000000.protos").read_bytes() == (
            HERE / "expected" / "protos" / "00000000.protos"
        ).read_bytes()


def test_summary_and_report(golden_data, tmp_path, capsys):
    report = tmp_path / "report.json"
    assert (
        main(
            [
                "build-dataset",
                "--input",
                str(golden_data),
                "--output",
                str(tmp_path / "out"),
                "--report",
                str(report),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "groups: 5  sentences: 8  frames: 347" in printed
    assert "SPK2/z.lab: no codes (.npy)" in printed and "SPK2/y.npy: no transcript y.lab" in printed
    data = json.loads(report.read_text())
    assert (data["groups"], data["sentences"], data["frames"], data["num_codebooks"]) == (5, 8, 347, 4)
    assert data["audio_hours"] == pytest.approx(347 * 2048 / 44100 / 3600)
    assert sorted(Path(s["path"]).name for s in data["skipped"]) == ["y.npy", "z.lab"]
    assert data["shards"] == [str(tmp_path / "out" / "00000000.protos")]


def test_build_text_cleaning():
    assert clean_build_text("  Line one,\nline two.\n") == " Line one, line two. "
    assert clean_build_text("a {laugh} b <i>c</i>d") == "a b c d"
    assert clean_build_text("{open\nclose}") == "{open close}"  # spans never cross a line break
    assert clean_build_text("{tag}") == " "
    assert clean_build_text("") == ""


def test_bad_clips_are_skipped_with_the_file_named(tmp_path):
    data = tmp_path / "data"
    clip(data / "A", "good", frames=12)
    clip(data / "A", "float", frames=12)
    np.save(data / "A" / "float.npy", codes(12).astype(np.float32))
    clip(data / "A", "flat")
    np.save(data / "A" / "flat.npy", np.arange(10))
    clip(data / "A", "rows", rows=10)
    clip(data / "A", "empty", frames=0)
    clip(data / "A", "negative")
    np.save(data / "A" / "negative.npy", -codes(5) - 1)
    clip(data / "A", "corrupt")
    (data / "A" / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    clip(data / "A", "latin1")
    (data / "A" / "latin1.lab").write_bytes("caf\xe9".encode("latin-1"))
    clip(data / "A", "nolab", text=None)
    (data / "A" / "nocodes.wav").write_bytes(b"")
    (data / "A" / "nocodes.lab").write_text("words")
    outside = tmp_path / "elsewhere"
    clip(outside, "secret")
    (data / "A" / "link.npy").symlink_to(outside / "secret.npy")
    (data / "A" / "link.lab").write_text("linked")

    summary = build_dataset([data], tmp_path / "out", [".lab"], num_workers=1)
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert summary.sentences == 1 and summary.frames == 12
    assert reasons == {
        "float.npy": "codes must be integers, got float32",
        "flat.npy": "codes must be a 2-D array (codebooks, frames), got shape (10,)",
        "rows.npy": "codes have 10 codebooks, expected 4",
        "empty.npy": "codes have no frames",
        "negative.npy": reasons["negative.npy"],
        "corrupt.npy": reasons["corrupt.npy"],
        "latin1.npy": "transcript latin1.lab is not UTF-8 (byte 3)",
        "nolab.npy": "no transcript nolab.lab",
        "nocodes.lab": "no codes (.npy): run extract-vq first",
        "link.npy": f"symbolic link to a file outside {data}",
    }
    assert reasons["negative.npy"].startswith("codes must be in [0, 2^32)")
    assert reasons["corrupt.npy"].startswith("cannot read codes")
    [group] = read_protos(tmp_path / "out")
    assert [s.texts[0] for s in group.sentences] == ["some words"]


def test_num_codebooks_option_and_utf8_bom(tmp_path):
    data = tmp_path / "data"
    clip(data / "S", "four", rows=4)
    clip(data / "S", "ten", rows=10)
    (data / "S" / "ten.lab").write_bytes("\ufeffbom text".encode())
    summary = build_dataset([data], tmp_path / "out", num_codebooks=10, num_workers=1)
    assert summary.sentences == 1 and [s.reason for s in summary.skipped] == [
        "codes have 4 codebooks, expected 10"
    ]
    [group] = read_protos(tmp_path / "out")
    assert list(group.sentences[0].texts) == ["bom text"] and len(group.sentences[0].semantics) == 10


def test_grouping_order_and_names(tmp_path, monkeypatch):
    data = tmp_path / "data"
    clip(data / "SPK1-x", "a")
    clip(data / "SPK1", "z")
    clip(data / "SPK1" / "sub", "m")
    clip(data / "SPK1", "b")
    clip(data, "top")
    build_dataset([data], tmp_path / "out", num_workers=1)
    # Path order compares components: SPK1/… before SPK1-x/…; a group = a parent folder.
    groups = [(g.name, [s.texts[0] for s in g.sentences]) for g in read_protos(tmp_path / "out")]
    assert [name for name, _ in groups] == ["SPK1", "sub", "SPK1-x", "data"]
    assert [len(s) for _, s in groups] == [2, 1, 1, 1]
    # `--input .`: a top-level clip's parent is Path("."), whose name is empty (no name field).
    monkeypatch.chdir(data)
    build_dataset(["."], tmp_path / "out2", num_workers=1)
    assert [g.name for g in read_protos(tmp_path / "out2")][-1] == ""


def test_many_workers_give_the_same_bytes_and_shards(tmp_path):
    data = tmp_path / "data"
    for s in range(12):
        for c in range(3):
            clip(
                data / f"spk{s:02d}",
                f"c{c}",
                text=f"speaker {s} clip {c}",
                frames=50 + 10 * s,
                seed=s * 10 + c,
            )
    one = build_dataset([data], tmp_path / "one", num_workers=1, shard_size_mb=0.004)
    many = build_dataset([data], tmp_path / "many", num_workers=4, shard_size_mb=0.004)
    assert len(one.shards) > 2 and (one.groups, one.sentences, one.frames) == (
        many.groups,
        many.sentences,
        many.frames,
    )
    for a, b in zip(one.shards, many.shards, strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
    assert [g.name for g in read_protos(tmp_path / "many")] == [f"spk{s:02d}" for s in range(12)]

    # A rerun with bigger shards replaces the output and leaves no stale shard behind.
    rerun = build_dataset([data], tmp_path / "one", num_workers=2, shard_size_mb=10)
    assert [Path(p).name for p in rerun.shards] == ["00000000.protos"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["00000000.protos"]
    assert list(read_protos(tmp_path / "one")) == list(read_protos(tmp_path / "many"))


def test_repeated_inputs_are_chained_in_order(tmp_path):
    clip(tmp_path / "b" / "S", "x", text="from b")
    clip(tmp_path / "a" / "S", "x", text="from a")
    build_dataset([tmp_path / "b", tmp_path / "a"], tmp_path / "out", num_workers=1)
    assert [g.sentences[0].texts[0] for g in read_protos(tmp_path / "out")] == ["from b", "from a"]


def test_filelist_input(tmp_path, monkeypatch):
    clip(tmp_path / "wavs", "one", text=None, frames=7)
    clip(tmp_path / "wavs", "two", text=None, frames=8)
    for stem in ("one", "two", "nocodes"):
        (tmp_path / "wavs" / f"{stem}.wav").write_bytes(b"")
    filelist = tmp_path / "list.txt"
    filelist.write_text(
        "wavs/one.wav|Ann Lee|EN|Hello {laugh} there.\r\n"
        "\n"
        "only|three|fields\n"
        "wavs/missing.wav|Bob|en|gone\n"
        "  wavs/two.wav|Bob|ja|text | with a bar  \n"
        "wavs/nocodes.wav|Cid|zh|no codes\n",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path / "wavs")  # listed paths also resolve relative to the filelist
    summary = build_dataset([filelist], tmp_path / "out", num_workers=1)
    groups = list(read_protos(tmp_path / "out"))
    assert [(g.source, g.name, [list(s.texts) for s in g.sentences]) for g in groups] == [
        ("filelist", "Ann Lee", [["Hello there."]]),
        ("filelist", "Bob", [["text | with a bar"]]),
        ("filelist", "Cid", []),  # upstream keeps a group whose clips all lack codes
    ]
    assert summary.empty_groups == ["Cid"]
    reasons = sorted(s.reason for s in summary.skipped)
    assert reasons == [
        "filelist line needs 4 fields: path|speaker|language|text",
        "listed file wavs/missing.wav does not exist",
        "no codes (.npy): run extract-vq first",
    ]
    filelist.write_text("wavs/one.wav|Ann|fr|Bonjour\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"list\.txt:1: unsupported language 'fr'"):
        build_dataset([filelist], tmp_path / "out", num_workers=1)


def test_nothing_usable_is_a_clear_error_and_keeps_the_old_output(tmp_path, capsys):
    data = tmp_path / "data"
    clip(data / "S", "a")
    build_dataset([data], tmp_path / "out", num_workers=1)
    before = (tmp_path / "out" / "00000000.protos").read_bytes()

    np.save(data / "S" / "a.npy", np.zeros(3))  # now every clip fails at the codes stage
    assert main(["build-dataset", "--input", str(data), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no usable clip" in err and "a.npy" in err
    assert (tmp_path / "out" / "00000000.protos").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000000.protos"]

    (data / "S" / "a.lab").unlink()
    with pytest.raises(UserError, match="no clip with codes and a transcript"):
        build_dataset([data], tmp_path / "out")
    with pytest.raises(UserError, match="missing: input folder or filelist does not exist"):
        build_dataset([tmp_path / "missing"], tmp_path / "out")


def test_assembled_group_equals_protobuf_serialization(tmp_path):
    from fish_speech.dataset.build_dataset import Group, PackClip, assemble_group, pack_clip
    from fish_speech.dataset.protos import Semantics, Sentence, TextData

    clips = []
    for i, frames in enumerate([1, 60, 700]):  # sentence sizes below and above one varint byte
        np.save(tmp_path / f"{i}.npy", codes(frames, rows=10, seed=i) * 60)
        clips.append(PackClip(tmp_path / f"{i}.npy", [f"text {i}", ""]))
    for source, name in [("folder", "SPK"), ("filelist", ""), ("", "")]:
        group = Group(source, name, clips)
        message = TextData(source=source, name=name)
        for c in clips:
            rows = np.load(c.codes).tolist()
            message.sentences.append(Sentence(texts=c.texts, semantics=[Semantics(values=r) for r in rows]))
        assert assemble_group(group, [pack_clip(c, 10)[0] for c in clips]) == message.SerializeToString()


def test_symlinked_folders_are_reported_not_followed(tmp_path):
    data = tmp_path / "data"
    clip(data / "SPK", "a", text="inside")
    clip(tmp_path / "outside", "b", text="outside")
    (data / "SPK" / "loop").symlink_to(data, target_is_directory=True)
    (data / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    summary = build_dataset([data], tmp_path / "out", num_workers=1)
    assert [s.texts[0] for g in read_protos(tmp_path / "out") for s in g.sentences] == ["inside"]
    assert sorted((Path(s.path).name, s.reason) for s in summary.skipped) == [
        ("linked", "symbolic link to a folder: not followed"),
        ("loop", "symbolic link to a folder: not followed"),
    ]


def test_codes_folders_give_the_bytes_of_codes_beside_the_clips(golden_data, tmp_path):
    """`--codes DIR [--codes DIR]`: codes split over two folders (as extract-vq shards write them)."""
    beside = tmp_path / "beside"
    assert main(["build-dataset", "--input", str(golden_data), "--output", str(beside)]) == 0
    shards = [tmp_path / "shard0", tmp_path / "shard1"]
    for k, npy in enumerate(sorted(golden_data.rglob("*.npy"))):
        dest = shards[k % 2] / npy.relative_to(golden_data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(npy, dest)
    assert not list(golden_data.rglob("*.npy"))
    out = tmp_path / "split"
    argv = ["build-dataset", "--input", str(golden_data), "--output", str(out)]
    assert main([*argv, "--codes", str(shards[0]), "--codes", str(shards[1])]) == 0
    assert [p.read_bytes() for p in sorted(out.glob("*.protos"))] == [
        p.read_bytes() for p in sorted(beside.glob("*.protos"))
    ]
    # with one shard only, the other shard's clips are reported as having no codes
    summary = build_dataset([golden_data], tmp_path / "half", codes=[shards[0]], num_workers=1)
    assert any(s.reason.startswith("no codes") for s in summary.skipped)


def test_a_clip_with_codes_in_two_folders_is_an_error(tmp_path):
    data = tmp_path / "data"
    clip(data / "SPK", "a")
    for shard in ("s0", "s1"):
        (tmp_path / shard / "SPK").mkdir(parents=True)
        np.save(tmp_path / shard / "SPK" / "a.npy", codes(10))
    argv = ["--input", str(data), "--output", str(tmp_path / "out")]
    with pytest.raises(UserError, match=r"SPK/a.npy: codes in two code folders"):
        build_dataset([data], tmp_path / "out", codes=[tmp_path / "s0", tmp_path / "s1"])
    assert main(["build-dataset", *argv, "--codes", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("cores", "expected"), [(2, 2), (64, 16)])
def test_num_workers_defaults_to_the_cores_available_at_most_16(monkeypatch, cores, expected):
    import os

    from fish_speech.cli import build_parser

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    args = build_parser().parse_args(["build-dataset", "--input", "data"])
    assert args.num_workers == expected
    for command in (["validate", "data"], ["normalize", "a", "b"]):
        assert build_parser().parse_args(command).num_workers == cores
