"""The data-side components under kfp.local, on the demo voice with a tiny random codec.

A small test pipeline imports the demo voice and a codec as artifacts (no fetch step) and runs
validate -> normalize -> extract-vq over 2 shards -> build-dataset, exactly as pipeline.py wires them.
Also: the plain-Python parts of components (plan_shards, report_status) and their error messages.
"""

# (no `from __future__ import annotations`: the test pipeline below needs real annotations)

import builtins
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _local(tmp_path: Path) -> Path:
    import warnings

    from kfp import local

    warnings.filterwarnings("ignore", message=".*non-Python base image.*", category=RuntimeWarning)
    root = tmp_path / "pipeline-root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    return root


@pytest.fixture
def codec_model(tmp_path) -> Path:
    from fish_speech.codec.checkpoint import write_random_codec

    model = tmp_path / "base"
    model.mkdir()
    write_random_codec(model / "codec.pth")
    return model


@pytest.mark.slow
def test_data_steps_on_the_demo_voice(tmp_path, demo_voice, codec_model):
    from kfp import dsl
    from kfp.dsl import Dataset, Model

    import components as c

    data = tmp_path / "clips"
    shutil.copytree(demo_voice, data)

    @dsl.pipeline(name="data-steps")
    def data_steps(data_uri: str, model_uri: str, num_shards: int):
        raw = dsl.importer(artifact_uri=data_uri, artifact_class=Dataset)
        weights = dsl.importer(artifact_uri=model_uri, artifact_class=Model)
        checked = c.validate(data=raw.output, content_hash="h1", max_clip_seconds=190.0)
        normalized = c.normalize(
            data=raw.output, content_hash="h1", loudness=-23.0, peak=-1.0, max_clip_seconds=190.0
        ).after(checked)
        shards = c.plan_shards(num_shards=num_shards)
        with dsl.ParallelFor(shards.output) as i:
            codes = c.extract_vq(
                data=normalized.outputs["normalized"],
                weights=weights.output,
                shard_index=i,
                num_shards=num_shards,
                content_hash="h1",
                batch_size=4,
                precision="float32",
                gpu_type="nvidia.com/gpu",
                gpu_count=1,
            )
        c.build_dataset(
            data=normalized.outputs["normalized"],
            codes=dsl.Collected(codes.outputs["codes"]),
            content_hash="h1",
        )

    root = _local(tmp_path)
    real_print = builtins.print  # kfp.local may leave its indenting print() behind (see pipeline.py)
    try:
        data_steps(data_uri=str(data), model_uri=str(codec_model), num_shards=2)
    finally:
        builtins.print = real_print
    (run,) = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("data-steps")]

    report = (run / "validate" / "report").read_text()
    assert "anna" in report and "ben" in report
    validate_metrics = json.loads((run / "validate" / "executor_output.json").read_text())
    assert validate_metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]["clips"] == 16

    normalized = run / "normalize" / "normalized"
    wavs = sorted(p.relative_to(normalized) for p in normalized.rglob("*.wav"))
    assert len(wavs) >= 14  # every usable demo clip

    shard_files = []
    for i in range(2):
        (codes,) = run.glob(f"for-loop-*-iteration-{i}/extract-vq/codes")
        files = sorted(p.relative_to(codes) for p in codes.rglob("*.npy"))
        assert files, f"shard {i} wrote no codes"
        shard_files.append(set(files))
        assert not list(codes.rglob("*.wav")), "only the codes move to the shard's artifact"
    assert not shard_files[0] & shard_files[1]
    assert shard_files[0] | shard_files[1] == {w.with_suffix(".npy") for w in wavs}
    assert not list(normalized.rglob("*.npy")), "extract-vq must not write into its input artifact"

    protos = sorted((run / "build-dataset" / "protos").glob("*.protos"))
    assert protos and all(p.stat().st_size > 0 for p in protos)
    from fish_speech.dataset.protos import read_protos

    groups = [g for p in protos for g in read_protos(p)]
    assert sorted(g.name for g in groups) == ["anna", "ben"]
    assert sum(len(g.sentences) for g in groups) == len(wavs)


def test_plan_shards(tmp_path):
    import components as c

    _local(tmp_path)
    assert [int(i) for i in c.plan_shards(num_shards=3).output] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        c.plan_shards(num_shards=0)


def test_fetch_weights_rejects_a_revision_off_the_hub(tmp_path):
    import components as c

    _local(tmp_path)
    with pytest.raises(RuntimeError):
        c.fetch_weights(source="s3://bucket/model", revision="abc123")
