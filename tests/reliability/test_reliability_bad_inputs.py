"""Bad-input corpus through validate -> normalize -> extract-vq -> build-dataset (issue #7 item 3).

Every bad case must end as a recorded skip or a clear error naming the file, the good clips must
go through, no step may crash with a traceback, and no partial (`.tmp-*`) or unreadable output
file may remain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus import CASES, build_corpus
from harness import fish_speech, require_commands, temp_files, tree_bytes

from fish_speech.dataset.protos import read_protos


def run_data_path(tmp_path: Path, codec: Path, include_slow: bool) -> dict:
    raw, norm, protos = tmp_path / "raw", tmp_path / "norm", tmp_path / "norm" / "protos"
    build_corpus(raw, include_slow=include_slow)
    validate = fish_speech("validate", raw).check(0, 1)
    steps = [
        fish_speech("normalize", raw, norm).check(),
        fish_speech("extract-vq", norm, "--checkpoint-path", codec, "--num-workers", "1").check(),
        fish_speech("build-dataset", "--input", norm, "--output", protos, "--num-workers", "2").check(),
    ]
    texts = [t for group in read_protos(protos) for s in group.sentences for t in s.texts]
    return {"raw": raw, "norm": norm, "protos": protos, "validate": validate, "steps": steps, "texts": texts}


def check_cases(run: dict, include_slow: bool) -> list[str]:
    """Every case's expectation; returns the failures (empty = all good)."""
    later_output = "\n".join(r.output for r in run["steps"])
    failures = []
    for case in CASES:
        if case.slow and not include_slow:
            continue
        reached = any(case.marker in t for t in run["texts"])
        if case.in_protos is True and not reached:
            failures.append(f"{case.name}: a good clip did not reach the protos")
        if case.in_protos is False and reached:
            failures.append(f"{case.name}: a bad clip reached the protos")
        if not reached and case.named:
            if case.name not in later_output:
                failures.append(
                    f"{case.name}: left out but no step (normalize/extract-vq/build-dataset) names it"
                )
            if case.in_protos is False and case.name not in run["validate"].output:
                failures.append(f"{case.name}: validate's report does not name this bad clip")
    return failures


def check_outputs(run: dict) -> list[str]:
    """No partial file, and every output file is whole and readable."""
    failures = [f"partial file left: {p}" for p in temp_files(run["norm"])]
    for path in sorted(run["norm"].rglob("*")):
        if not path.is_file() or path.name.startswith(".tmp-"):
            continue
        try:
            if path.suffix == ".wav":
                audio, _ = sf.read(path, dtype="float32")
                if audio.size == 0 or not np.isfinite(audio).all():
                    failures.append(f"{path}: empty or non-finite normalized audio")
            elif path.suffix == ".npy":
                codes = np.load(path)
                if codes.ndim != 2 or codes.dtype.kind not in "iu" or codes.shape[1] == 0:
                    failures.append(f"{path}: codes of shape {codes.shape} / {codes.dtype}")
            elif path.suffix == ".lab":
                path.read_text(encoding="utf-8")
        except Exception as e:
            failures.append(f"{path}: unreadable output ({type(e).__name__}: {e})")
    return failures


@pytest.mark.slow
def test_bad_input_corpus(tmp_path, tiny_codec):
    require_commands("validate", "normalize", "extract-vq", "build-dataset")
    run = run_data_path(tmp_path, tiny_codec, include_slow=False)
    failures = check_cases(run, include_slow=False) + check_outputs(run)
    assert not failures, "\n".join(failures)
    assert sum(c.in_protos is True for c in CASES) <= len(run["texts"])

    # Rerunning the whole path changes nothing (finished outputs are kept, not redone).
    before = tree_bytes(run["norm"], [".wav", ".lab", ".npy", ".protos"])
    mtimes = {p: p.stat().st_mtime_ns for p in run["norm"].rglob("*") if p.suffix in (".wav", ".lab", ".npy")}
    fish_speech("normalize", run["raw"], run["norm"]).check()
    fish_speech("extract-vq", run["norm"], "--checkpoint-path", tiny_codec).check()
    fish_speech("build-dataset", "--input", run["norm"], "--output", run["protos"]).check()
    assert tree_bytes(run["norm"], [".wav", ".lab", ".npy", ".protos"]) == before
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes, "a rerun rewrote finished clips"


@pytest.mark.slow
def test_twelve_minute_clip_goes_through_or_is_named(tmp_path, tiny_codec):
    """The 12-minute clip alone (it dominates the run time)."""
    require_commands("validate", "normalize", "extract-vq", "build-dataset")
    long_case = next(c for c in CASES if c.name == "long_12min")
    raw = tmp_path / "raw"
    long_case.build(raw, long_case)
    good = next(c for c in CASES if c.name == "good_wav24")
    good.build(raw, good)
    norm, protos = tmp_path / "norm", tmp_path / "protos"
    fish_speech("validate", raw).check(0, 1)
    out = [
        fish_speech("normalize", raw, norm).check(),
        fish_speech("extract-vq", norm, "--checkpoint-path", tiny_codec).check(),
        fish_speech("build-dataset", "--input", norm, "--output", protos).check(),
    ]
    texts = [t for g in read_protos(protos) for s in g.sentences for t in s.texts]
    assert any(good.marker in t for t in texts)
    if not any(long_case.marker in t for t in texts):
        assert long_case.name in "\n".join(r.output for r in out)
    assert not temp_files(norm, protos)


def test_corpus_has_the_cases_the_issue_lists():
    names = {c.name for c in CASES}
    assert len(CASES) >= 20
    for required in [
        "lab_empty",
        "lab_missing",
        "lab_latin1",
        "audio_empty",
        "audio_truncated",
        "audio_garbage",
        "wav_overclaims",
        "rate_8k",
        "rate_96k",
        "six_channels",
        "samples_nan",
        "samples_inf",
        "silence",
        "long_12min",
        "lab_1mb",
        "dup_stem",
        "symlink_out",
        "unicode_name",
    ]:
        assert required in names


def test_corpus_files_are_what_they_claim(tmp_path):
    paths = build_corpus(tmp_path / "raw")
    info = sf.info(paths["six_channels"])
    assert (info.channels, info.samplerate) == (6, 44100)
    assert sf.info(paths["rate_96k"]).samplerate == 96000
    assert paths["audio_empty"].stat().st_size == 0
    assert paths["symlink_out"].is_symlink() and not paths["symlink_out"].resolve().is_relative_to(
        tmp_path / "raw"
    )
    data, _ = sf.read(paths["samples_nan"])
    assert np.isnan(data).any()
    # The over-claiming header: libsndfile reads only the samples present.
    assert sf.read(paths["wav_overclaims"])[0].shape[0] == 44100
    assert (paths["lab_1mb"].with_suffix(".lab")).stat().st_size == 1024 * 1024
    with pytest.raises(UnicodeDecodeError):
        paths["lab_latin1"].with_suffix(".lab").read_text(encoding="utf-8")
    assert " " in paths["unicode_name"].name and not paths["unicode_name"].name.isascii()
