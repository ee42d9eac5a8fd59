#!/usr/bin/env python3
"""Build and push the pipeline's container images with docker or podman.

    python images/build.py build --registry ghcr.io/me --tag v1 [--only cpu] [--engine podman] [--dry-run]
    python images/build.py push  --registry ghcr.io/me --tag v1

Image names come from images/images.json (the one place they live; pipeline.py reads the same file).
`push` records each pushed image's digest there, so a later `python pipeline.py --compile` pins the
images by digest. Standard library only: the Makefile runs this with the system Python.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES_JSON = Path(__file__).resolve().parent / "images.json"


def load_config(path: Path = IMAGES_JSON) -> dict:
    """The parsed images.json."""
    return json.loads(path.read_text(encoding="utf-8"))


def image_ref(config: dict, kind: str, registry: str, tag: str) -> str:
    """`REGISTRY/NAME:TAG` of one image kind (cpu, gpu)."""
    name = config["images"][kind]["name"]
    return f"{registry.rstrip('/')}/{name}:{tag}"


def find_engine(preferred: str | None) -> str:
    """docker or podman: the one asked for, else the first one on PATH."""
    candidates = [preferred] if preferred else ["docker", "podman"]
    for engine in candidates:
        if shutil.which(engine):
            return engine
    raise SystemExit(f"images/build.py: none of {', '.join(candidates)} is on PATH")


# What the images install; the build context holds only these (never .venv, runs/, tests/ ...).
CONTEXT_FILES = ("pyproject.toml", "README.md", "fish_speech")


def stage_context(dest: Path) -> Path:
    """Copy the files the Dockerfiles COPY into `dest`: a small build context for docker and podman
    alike (per-Dockerfile .dockerignore files are a BuildKit feature)."""
    for name in CONTEXT_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".tmp-*"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def build_commands(
    config: dict, kinds: list[str], registry: str, tag: str, engine: str, context: Path
) -> list[list[str]]:
    """The `ENGINE build` command lines, one per image, on the staged build `context`."""
    return [
        [
            engine,
            "build",
            "--file",
            str(REPO / config["images"][kind]["dockerfile"]),
            "--tag",
            image_ref(config, kind, registry, tag),
            str(context),
        ]
        for kind in kinds
    ]


def _run(cmd: list[str], dry_run: bool) -> None:
    print("+ " + " ".join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, check=True)


def _pushed_digest(engine: str, ref: str) -> str:
    """The registry digest (sha256:...) of a pushed image, from the engine's image metadata."""
    out = subprocess.run(
        [engine, "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    repo = ref.rsplit(":", 1)[0]
    for entry in json.loads(out) or []:
        name, _, digest = entry.partition("@")
        # podman lists the repository with a docker.io/ or localhost/ prefix sometimes: compare the tail
        if digest.startswith("sha256:") and (name == repo or name.endswith("/" + repo)):
            return digest
    raise SystemExit(f"images/build.py: no registry digest for {ref} after push (RepoDigests: {out.strip()})")


def record_digests(digests: dict[str, str], path: Path = IMAGES_JSON) -> None:
    """Merge `{ref: digest}` into images.json, atomically."""
    config = load_config(path)
    config.setdefault("digests", {}).update(digests)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("action", choices=["build", "push"])
    parser.add_argument("--registry", default=os.environ.get("IMAGE_REGISTRY"), help="default: images.json")
    parser.add_argument("--tag", default=os.environ.get("IMAGE_TAG"), help="default: images.json")
    parser.add_argument("--only", choices=["cpu", "gpu"], action="append", help="one image kind (repeatable)")
    parser.add_argument("--engine", choices=["docker", "podman"], help="default: docker, else podman")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)

    config = load_config()
    registry = args.registry or config["registry"]
    tag = args.tag or config["tag"]
    kinds = args.only or list(config["images"])
    engine = (args.engine or "docker") if args.dry_run else find_engine(args.engine)

    if args.action == "build":
        with tempfile.TemporaryDirectory(prefix="fish-speech-image-") as tmp:
            context = stage_context(Path(tmp))
            for cmd in build_commands(config, kinds, registry, tag, engine, context):
                _run(cmd, args.dry_run)
        return 0

    digests = {}
    for kind in kinds:
        ref = image_ref(config, kind, registry, tag)
        _run([engine, "push", ref], args.dry_run)
        if not args.dry_run:
            digests[ref] = _pushed_digest(engine, ref)
            print(f"{ref}@{digests[ref]}")
    if digests:
        record_digests(digests)
        print(f"recorded {len(digests)} digest(s) in {IMAGES_JSON.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
