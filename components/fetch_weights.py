"""fetch-weights: the base checkpoint directory (model.pth, config.json, tokenizer, codec.pth) as a Model."""

from kfp import dsl
from kfp.dsl import Model, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_weights(source: str, revision: str, model: Output[Model]):
    """`fish-speech fetch-weights SOURCE --output MODEL [--revision REV]` (tiny, hf://, gs://, s3://, dir)."""
    from fish_speech.steps.model import fetch_weights_step

    fetch_weights_step(source, revision, model.path)
    model.metadata["source"] = source
    model.metadata["revision"] = revision
