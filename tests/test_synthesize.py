"""`fish-speech synthesize` and fish_speech.synthesis: decoding vs upstream's audio, the command end to end
(upstream's codes and WAV through the CLI), text files with a manifest, LoRA in memory == merged, long
text, and every bad input as one line with exit status 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from fish_speech.cli import main as cli_main
from fish_speech.codec.checkpoint import load_codec
from fish_speech.codec.decode import decode_codes
from fish_speech.synthesis import apply_lora, load_voice, split_text, synthesize, write_wav
from fish_speech.text2semantic import lora as L
from fish_speech.text2semantic.checkpoint import read_state_dict
from fish_speech.text2semantic.generate import SamplingSettings
from fish_speech.text2semantic.merge import merge_lora

TESTS = Path(__file__).resolve().parent
GEN = TESTS / "data" / "generate"
CODEC = TESTS / "data" / "codec"
HELLO = CODEC / "expected" / "mono44k" / "hello.npy"
REF_TEXT = "Hello there. This is a short test of the audio codec."
REF1_TEXT = "Numbers like 12, 345 and 6789 appear in text."


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """The golden generation checkpoint with the golden codec beside it (a complete folder)."""
    out = tmp_path_factory.mktemp("ckpt") / "ckpt"
    shutil.copytree(GEN / "ckpt", out)
    shutil.copy(CODEC / "codec.pth", out / "codec.pth")
    for p in out.iterdir():
        p.chmod(0o644)
    return out


@pytest.fixture(scope="module")
def codec():
    return load_codec(CODEC / "codec.pth")


@pytest.mark.parametrize("name", ["plain_s42", "ref1_s42"])
def test_decoded_audio_within_tolerance(codec, name: str) -> None:
    info = json.loads((GEN / "audio" / f"{name}.json").read_text())
    run = {"plain_s42": "plain__s42_t08_p08_r11", "ref1_s42": "ref1__s42_t08_p08_r11"}[name]
    audio = decode_codes(codec, np.load(GEN / "runs" / run / "codes.npy"))
    want = np.load(GEN / "audio" / f"{name}.audio.npy")
    assert audio.dtype == np.float32 and audio.shape == want.shape
    np.testing.assert_allclose(audio, want, atol=1e-5, rtol=0)
    assert info  # the json names the codes this audio came from


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli_main(["synthesize", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_command_reproduces_upstream_codes_and_wav(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "ref1.wav"
    code, stdout, _ = _cli(
        capsys,
        "--checkpoint", str(ckpt), "--text", REF1_TEXT, "--output", str(out),
        "--reference-audio", str(HELLO), "--reference-text", REF_TEXT,
        "--max-new-tokens", "48", "--seed", "42", "--device", "cpu",
    )  # fmt: skip
    assert code == 0 and str(out) in stdout
    np.testing.assert_array_equal(
        np.load(out.with_suffix(".npy")), np.load(GEN / "runs" / "ref1__s42_t08_p08_r11" / "codes.npy")
    )
    golden = (GEN / "audio" / "ref1_s42.wav").read_bytes()
    ours = out.read_bytes()
    assert len(ours) == len(golden) and ours[:44] == golden[:44]  # same header: PCM_16 mono 44.1 kHz
    a = np.frombuffer(ours[44:], dtype="<i2").astype(int)
    b = np.frombuffer(golden[44:], dtype="<i2").astype(int)
    assert np.abs(a - b).max() <= 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_text_file_writes_numbered_wavs_and_manifest_and_resumes(ckpt, tmp_path, capsys) -> None:
    texts = tmp_path / "lines.txt"
    texts.write_text("Hello world!\n\nThe quick brown fox.\nA third line, short.\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["--checkpoint", str(ckpt), "--text-file", str(texts), "--output", str(out), "--max-new-tokens", "20",
            "--device", "cpu", "--reference-audio", str(HELLO), "--reference-text", REF_TEXT]  # fmt: skip
    code, _, _ = _cli(capsys, *args, "--batch-size", "2")
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [u["wav"] for u in manifest["utterances"]] == ["0001.wav", "0002.wav", "0003.wav"]
    assert [u["text"] for u in manifest["utterances"]] == [
        "Hello world!",
        "The quick brown fox.",
        "A third line, short.",
    ]
    assert manifest["seed"] == 42 and manifest["settings"]["top_p"] == 0.8
    for u in manifest["utterances"]:
        data, sr = sf.read(out / u["wav"], dtype="int16")
        info = sf.info(out / u["wav"])
        codes = np.load(out / u["codes"])
        assert sr == 44100 and info.subtype == "PCM_16" and info.channels == 1
        assert codes.dtype == np.int64 and codes.shape == (10, u["frames"])
        assert len(data) == 2048 * u["frames"] and u["seconds"] == pytest.approx(len(data) / 44100, abs=1e-4)
        assert u["real_time_factor"] > 0
    # batch 2 == batch 1 (own generator per row); a rerun with the same settings redoes nothing
    first = {u["wav"]: np.load(out / u["codes"]) for u in manifest["utterances"]}
    out1 = tmp_path / "out1"
    args1 = [a if a != str(out) else str(out1) for a in args]
    assert _cli(capsys, *args1)[0] == 0
    for name, codes in first.items():
        np.testing.assert_array_equal(np.load(out1 / name.replace(".wav", ".npy")), codes)
    mtime = (out / "0002.wav").stat().st_mtime_ns
    code, stdout, _ = _cli(capsys, *args, "--batch-size", "2")
    assert code == 0 and "wrote" not in stdout and (out / "0002.wav").stat().st_mtime_ns == mtime


def _random_lora(ckpt: Path, path: Path) -> Path:
    spec = L.resolve_lora_spec("r_8_alpha_16")
    gen = torch.Generator().manual_seed(0)
    shapes = L.expected_lora_shapes(read_state_dict(ckpt / "model.pth"), spec)
    state = {k: 0.2 * torch.randn(s, generator=gen) for k, s in shapes.items()}
    torch.save({"state_dict": state}, path)
    return path


def test_lora_in_memory_equals_merged_folder(ckpt, tmp_path) -> None:
    lora = _random_lora(ckpt, tmp_path / "lora.ckpt")
    merged = merge_lora(ckpt, lora, tmp_path / "merged")
    settings = SamplingSettings(max_new_tokens=24)
    texts = ["Hello world! The quick brown fox jumps over the lazy dog.", REF1_TEXT]

    voice = load_voice(ckpt, device="cpu")
    refs = voice.references([str(HELLO)], [REF_TEXT])
    base = synthesize(voice, texts, refs, settings)
    apply_lora(voice, lora)
    on_the_fly = synthesize(voice, texts, refs, settings)
    from_merged = synthesize(load_voice(merged, device="cpu"), texts, refs, settings)
    for a, b in zip(on_the_fly, from_merged, strict=True):
        np.testing.assert_array_equal(a.codes, b.codes)
        np.testing.assert_array_equal(a.audio, b.audio)
    assert any(not np.array_equal(a.codes, c.codes) for a, c in zip(on_the_fly, base, strict=True))
    # switching back to the base weights: apply from the base file every time
    state = read_state_dict(merged / "model.pth")
    params = voice.model.state_dict()
    assert all(torch.equal(params[k], v.float()) for k, v in state.items())


def test_split_text() -> None:
    assert split_text("Short text.", 300) == ["Short text."]
    long = " ".join(f"Sentence number {i} is here." for i in range(40))
    pieces = split_text(long, 100)
    assert all(len(p) <= 100 for p in pieces) and len(pieces) > 5
    assert " ".join(pieces) == long  # cut only between sentences
    assert all(p.endswith(".") for p in pieces)
    zh = "今天天气很好。" * 30
    assert "".join(split_text(zh, 50)) == zh and all(len(p) <= 50 for p in split_text(zh, 50))
    assert all(len(p) <= 10 for p in split_text("a" * 35, 10))  # no boundary at all: hard cuts
    assert split_text(long, 0) == [long]


def test_long_text_is_split_and_joined_with_a_pause(ckpt) -> None:
    voice = load_voice(ckpt, device="cpu")
    text = "First sentence is here. Second sentence is here. Third one ends it."
    (utt,) = synthesize(voice, [text], [], SamplingSettings(max_new_tokens=6), max_chars=30, batch_size=3)
    assert len(utt.pieces) == 3 and utt.codes.shape[1] == sum(5 for _ in utt.pieces)
    assert len(utt.audio) == 2048 * utt.codes.shape[1] + 2 * int(0.25 * 44100)


# ---- bad input -----------------------------------------------------------------------------------------


def _bad(capsys, tmp_path, *argv, match: str) -> None:
    out = tmp_path / "bad.wav"
    if "--output" not in argv:
        argv = (*argv, "--output", str(out))
    code, _, err = _cli(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_bad_inputs(ckpt, tmp_path, capsys) -> None:
    base = ("--checkpoint", str(ckpt), "--device", "cpu")
    _bad(capsys, tmp_path, *base, "--text", "  ", match="--text is empty")
    _bad(capsys, tmp_path, *base, "--text", "word " * 3000, "--max-chars", "0", match="the limit is 2048")
    bad_audio = tmp_path / "broken.wav"
    bad_audio.write_bytes(b"RIFF not really a wav")
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--reference-audio", str(bad_audio), "--reference-text", "x",
         match="broken.wav: cannot read audio")  # fmt: skip
    long_audio = tmp_path / "long.wav"
    sf.write(long_audio, np.zeros(31 * 44100, np.float32), 44100)
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--reference-audio", str(long_audio), "--reference-text", "x",
         match="31.0 s long; the limit is 30 s")  # fmt: skip
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--reference-audio", str(HELLO),
         match="1 --reference-audio but 0 --reference-text")  # fmt: skip
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--reference-audio", str(HELLO), "--reference-text", " ",
         match="has no transcript")  # fmt: skip
    no_codec = tmp_path / "no_codec"
    shutil.copytree(GEN / "ckpt", no_codec)
    _bad(capsys, tmp_path, "--checkpoint", str(no_codec), "--text", "Hi.", match="codec.pth: missing")
    lora = _random_lora(ckpt, tmp_path / "lora.ckpt")
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--lora", str(lora), "--lora-config", "r_4_alpha_8",
         match="does not match --lora-config r_4_alpha_8")  # fmt: skip
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--top-p", "0", match="--top-p must be in (0, 1]")
    _bad(
        capsys,
        tmp_path,
        *base,
        "--text",
        "Hi.",
        "--output",
        str(tmp_path / "x.mp3"),
        match="give a .wav file name",
    )
    _bad(capsys, tmp_path, *base, "--text", "Hi.", "--reference-dir", str(tmp_path / "nowhere"),
         match="reference folder not found")  # fmt: skip
    if not torch.cuda.is_available():
        _bad(
            capsys,
            tmp_path,
            "--checkpoint",
            str(ckpt),
            "--text",
            "Hi.",
            "--device",
            "cuda",
            match="no CUDA device",
        )


def test_reference_dir_picks_clips_with_transcripts(demo_voice, tmp_path) -> None:
    from fish_speech.text2semantic.prompt import pick_reference_clips

    picked = pick_reference_clips(demo_voice / "anna")
    assert [p.name for p in picked] == ["a02.wav", "a03.wav", "a06.flac"]  # the three of 3-10 s, name order
    (tmp_path / "only").mkdir()
    sf.write(tmp_path / "only" / "x.wav", np.zeros(44100, np.float32), 44100)  # no .lab
    with pytest.raises(Exception, match="no audio clip with a transcript"):
        pick_reference_clips(tmp_path / "only")


def test_write_wav_is_pcm16(tmp_path) -> None:
    write_wav(tmp_path / "a.wav", np.array([0.0, 0.5, -0.5, 1.0], dtype=np.float32))
    info = sf.info(tmp_path / "a.wav")
    assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")


@pytest.mark.parametrize("clip", ["mono44k/hello.flac", "rates/hello22k.wav"])
def test_reference_audio_is_encoded_as_upstreams_extract_vq(ckpt, clip: str) -> None:
    voice = load_voice(ckpt, device="cpu")
    (ref,) = voice.references([str(CODEC / "audio" / clip)], [REF_TEXT])
    want = np.load(CODEC / "expected" / clip.replace(".flac", ".npy").replace(".wav", ".npy"))
    np.testing.assert_array_equal(ref.codes, want)
