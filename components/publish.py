"""publish: copy the merged model to its destination (gs://, s3://, hf://, or a path on the PVC)."""

from kfp import dsl
from kfp.dsl import Input, Model

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(model: Input[Model], destination: str) -> str:
    """`fish-speech publish MODEL DESTINATION`; returns the destination."""
    from fish_speech.steps.model import publish_step

    return publish_step(model.path, destination)
