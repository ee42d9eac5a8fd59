"""fetch-weights: the base checkpoint directory (model.pth, config.json, tokenizer, codec.pth) as a Model."""

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_weights(source: str, revision: str, model: Output[Model]):
    """`fish-speech fetch-weights SOURCE --output MODEL [--revision REV]` (tiny, hf://, gs://, s3://, dir)."""
    from fish_speech.cli import main

    argv = ["fetch-weights", source, "--output", model.path]
    if revision:
        if not source.startswith("hf://"):
            raise ValueError(f"base_revision={revision!r} applies to hf:// sources only, not {source!r}")
        argv += ["--revision", revision]
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    model.metadata["source"] = source
    model.metadata["revision"] = revision
