"""content-hash and fetch-data: the raw clips as a Dataset, cached on their content.

Why two steps, and the mirror on the workspace volume: see fish_speech/steps/data.py.
"""

from kfp import dsl
from kfp.dsl import Dataset, Output

from components.images import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def content_hash(source: str, mirror_root: str) -> str:
    """The content hash of the clips at `source` (gs://, s3://, or a path on the mounted PVC)."""
    from fish_speech.steps.data import content_hash_step

    return content_hash_step(source, mirror_root)


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def fetch_data(source: str, content_hash: str, mirror_root: str, data: Output[Dataset]):
    """`fish-speech fetch-data MIRROR|SOURCE --output DATA`; fails unless the files hash to `content_hash`."""
    from fish_speech.steps.data import fetch_data_step

    fetch_data_step(source, content_hash, mirror_root, data.path)
    data.metadata["source"] = source
    data.metadata["content_hash"] = content_hash
