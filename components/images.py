"""Container image references for the components, from images/images.json (the one place names live).

The registry and tag default to those in images.json and are overridden by the `IMAGE_REGISTRY` /
`IMAGE_TAG` environment variables (the same ones `make build-images` uses). When `images/build.py push`
recorded a digest for the resulting `REGISTRY/NAME:TAG`, the reference pins it (`NAME:TAG@sha256:...`).
Read once, when `components` is first imported (component decorators need the image then).
"""

import json
import os
from pathlib import Path

IMAGES_JSON = Path(__file__).resolve().parent.parent / "images" / "images.json"


def image_ref(kind: str, registry: str | None = None, tag: str | None = None) -> str:
    """The reference of image `kind` (cpu or gpu), pinned by digest when one is recorded."""
    config = json.loads(IMAGES_JSON.read_text(encoding="utf-8"))
    if kind not in config["images"]:
        raise KeyError(f"{IMAGES_JSON}: no image kind {kind!r} (have {', '.join(config['images'])})")
    registry = (registry or os.environ.get("IMAGE_REGISTRY") or config["registry"]).rstrip("/")
    tag = tag or os.environ.get("IMAGE_TAG") or config["tag"]
    ref = f"{registry}/{config['images'][kind]['name']}:{tag}"
    digest = config.get("digests", {}).get(ref)
    return f"{ref}@{digest}" if digest else ref


CPU_IMAGE = image_ref("cpu")
GPU_IMAGE = image_ref("gpu")
