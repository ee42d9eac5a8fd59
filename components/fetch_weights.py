"""fetch-weights: the base checkpoint directory (model.pth, config.json, tokenizer, codec.pth) as a Model."""

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_weights(source: str, revision: str, model: Output[Model]):
    """`fish-speech fetch-weights SOURCE[@REVISION] --output MODEL` (tiny, hf://, gs://, s3://, local dir)."""
    from fish_speech.cli import main

    if revision:
        if not source.startswith("hf://"):
            raise ValueError(f"base_revision={revision!r} applies to hf:// sources only, not {source!r}")
        if "@" in source:
            raise ValueError(f"give the revision once: in base_model ({source!r}) or in base_revision")
        source = f"{source}@{revision}"
    argv = ["fetch-weights", source, "--output", model.path]
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    model.metadata["source"] = source
