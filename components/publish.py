"""publish: copy the merged model to its destination (gs://, s3://, hf://, or a path on the PVC)."""

from kfp import dsl
from kfp.dsl import Input, Model

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(model: Input[Model], destination: str) -> str:
    """`fish-speech publish MODEL DESTINATION`; returns the destination."""
    from fish_speech.cli import main

    argv = ["publish", model.path, destination]
    status = main(argv)
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    return destination
