#!/usr/bin/env python3
"""Build and push the pipeline's container images with docker or podman.

    python images/build.py build --registry ghcr.io/me --tag v1 [--only cpu] [--engine podman]
                                 [--build-arg BASE_IMAGE=...] [--build-arg PIP_INDEX_URL=...] [--dry-run]
    python images/build.py push  --registry ghcr.io/me --tag v1 [--only gpu] [--engine docker]

Image names come from images/images.json (the one place they live; pipeline.py reads the same file).
`push` records the digest the registry serves for each pushed image there, so a later
`python pipeline.py --compile` pins the images by digest: podman writes it with `push --digestfile`
(its local image digest differs, because podman compresses the layers on push); docker reports it in the
image's RepoDigests. Standard library only: the Makefile runs this with the system Python.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
IMAGES_JSON = Path(__file__).resolve().parent / "images.json"
ENGINES = ("docker", "podman")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def load_config(path: Path = IMAGES_JSON) -> dict:
    """The parsed images.json."""
    return json.loads(path.read_text(encoding="utf-8"))


def image_ref(config: dict, kind: str, registry: str, tag: str) -> str:
    """`REGISTRY/NAME:TAG` of one image kind (cpu, gpu)."""
    name = config["images"][kind]["name"]
    return f"{registry.rstrip('/')}/{name}:{tag}"


def engine_answers(engine: str) -> bool:
    """Whether `engine info` works here (a docker client without a daemon does not)."""
    if not shutil.which(engine):
        return False
    try:
        return subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine(preferred: str | None) -> str:
    """docker or podman: the one asked for, else the first of them that answers."""
    candidates = [preferred] if preferred else list(ENGINES)
    for engine in candidates:
        if engine_answers(engine):
            return engine
    raise SystemExit(
        f"images/build.py: no container engine answers here (tried {', '.join(candidates)}: "
        "not on PATH, or `info` fails); images/airgap.sh engine installs podman"
    )


# What the images install; the build context holds only these (never .venv, runs/, tests/ ...).
CONTEXT_FILES = ("requirements", "pyproject.toml", "README.md", "fish_speech")


def stage_context(dest: Path) -> Path:
    """Copy the files the Dockerfiles COPY into `dest`: a small build context for docker and podman
    alike (per-Dockerfile .dockerignore files are a BuildKit feature). Of requirements/, the locks only."""
    for name in CONTEXT_FILES:
        src = REPO / name
        if name == "requirements":
            (dest / name).mkdir()
            for lock in sorted(src.glob("*.lock")):
                shutil.copy2(lock, dest / name / lock.name)
        elif src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".tmp-*"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def build_commands(
    config: dict,
    kinds: list[str],
    registry: str,
    tag: str,
    engine: str,
    context: Path,
    build_args: list[str] = (),
    network: str | None = None,
) -> list[list[str]]:
    """The `ENGINE build` command lines, one per image, on the staged build `context`."""
    extra = [a for arg in build_args for a in ("--build-arg", arg)]
    if network:
        extra += ["--network", network]
    return [
        [
            engine,
            "build",
            "--file",
            str(REPO / config["images"][kind]["dockerfile"]),
            "--tag",
            image_ref(config, kind, registry, tag),
            *extra,
            str(context),
        ]
        for kind in kinds
    ]


def push_command(engine: str, ref: str, digestfile: Path | None, tls_verify: bool = True) -> list[str]:
    """`ENGINE push REF`; podman writes the digest the registry stored into `digestfile`."""
    cmd = [engine, "push"]
    if engine == "podman":
        if digestfile is not None:
            cmd += ["--digestfile", str(digestfile)]
        if not tls_verify:
            cmd.append("--tls-verify=false")
    return [*cmd, ref]


def digest_from_digestfile(text: str, ref: str) -> str:
    """The digest in a `podman push --digestfile` file (`sha256:<64 hex>`, nothing else)."""
    digest = text.strip()
    if not DIGEST.match(digest):
        raise SystemExit(f"images/build.py: podman push wrote no digest for {ref} (digestfile: {text!r})")
    return digest


def digest_from_repo_digests(repo_digests_json: str, ref: str) -> str:
    """The registry digest of `ref` in `docker image inspect --format '{{json .RepoDigests}}'` output.

    RepoDigests holds `REPOSITORY@sha256:...` for each repository the image was pushed to or pulled from;
    the one for `ref`'s repository is the manifest digest the registry serves. Docker Hub names may be
    listed with or without `docker.io/` (and `library/`), so the repository is compared on its tail."""
    repo = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
    for entry in json.loads(repo_digests_json or "null") or []:
        name, _, digest = entry.partition("@")
        if DIGEST.match(digest) and (name == repo or name.endswith("/" + repo) or repo.endswith("/" + name)):
            return digest
    raise SystemExit(
        f"images/build.py: no registry digest for {ref} after push (RepoDigests: {repo_digests_json.strip()})"
    )


def _run(cmd: list[str], dry_run: bool) -> None:
    print("+ " + " ".join(cmd), flush=True)
    if not dry_run and subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"images/build.py: {cmd[0]} {cmd[1]} failed (see its output above)")


def push(engine: str, ref: str, tls_verify: bool = True) -> str:
    """Push `ref` and return the digest the registry serves for it."""
    if engine == "podman":
        with tempfile.TemporaryDirectory(prefix="fish-speech-push-") as tmp:
            digestfile = Path(tmp) / "digest"
            _run(push_command(engine, ref, digestfile, tls_verify), dry_run=False)
            return digest_from_digestfile(digestfile.read_text(encoding="utf-8"), ref)
    _run(push_command(engine, ref, None, tls_verify), dry_run=False)
    out = subprocess.run(
        [engine, "image", "inspect", "--format", "{{json .RepoDigests}}", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return digest_from_repo_digests(out, ref)


def record_digests(digests: dict[str, str], path: Path = IMAGES_JSON) -> None:
    """Merge `{ref: digest}` into images.json, atomically."""
    config = load_config(path)
    config.setdefault("digests", {}).update(digests)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o644)
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
    parser.add_argument("--engine", choices=ENGINES, help="default: the first of docker, podman that answers")
    parser.add_argument(
        "--build-arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="BASE_IMAGE, PIP_INDEX_URL, TORCH_INDEX_URL, TORCH_CUDA (gpu) (repeatable)",
    )
    parser.add_argument(
        "--network", help="build: the build containers' network (e.g. host, for a local index)"
    )
    parser.add_argument(
        "--tls-verify",
        choices=["true", "false"],
        default="true",
        help="push (podman): false for a plain-HTTP registry",
    )
    parser.add_argument(
        "--record", type=Path, default=IMAGES_JSON, help="push: the images.json to record digests in"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)

    for arg in args.build_arg:
        if "=" not in arg:
            parser.error(f"--build-arg {arg!r}: expected NAME=VALUE")
    config = load_config()
    registry = args.registry or config["registry"]
    tag = args.tag or config["tag"]
    kinds = args.only or list(config["images"])
    engine = (args.engine or "docker") if args.dry_run else find_engine(args.engine)

    if args.action == "build":
        with tempfile.TemporaryDirectory(prefix="fish-speech-image-") as tmp:
            context = stage_context(Path(tmp))
            for cmd in build_commands(
                config, kinds, registry, tag, engine, context, args.build_arg, args.network
            ):
                _run(cmd, args.dry_run)
        return 0

    digests = {}
    for kind in kinds:
        ref = image_ref(config, kind, registry, tag)
        if args.dry_run:
            _run(push_command(engine, ref, Path("DIGESTFILE") if engine == "podman" else None), dry_run=True)
            continue
        digests[ref] = push(engine, ref, tls_verify=args.tls_verify == "true")
        print(f"{ref}@{digests[ref]}")
    if digests:
        record_digests(digests, args.record)
        print(f"recorded {len(digests)} digest(s) in {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
