#!/usr/bin/env python3
"""Resolve the images' exact dependencies from pyproject.toml into hashed locks (run by `make locks`).

    python requirements/lock.py [--only cpu|gpu] [--index-url URL] [--torch-index-url URL] [--find-links DIR]

Resolved with `uv pip compile` for the images' platform, CPython 3.11 on x86-64 Linux (glibc >= 2.28),
whatever machine runs this. Each lock has its inputs beside it (`KIND.in`, derived from pyproject.toml):

- dev.lock: the project, the `pipeline` and `dev` extras and the build requirements. `make venv` installs
  the test environment under it (as constraints), so the tests run with the versions the images get.
- cpu.lock / gpu.lock: the images' packages (the project, `pipeline`, build requirements), every one
  pinned with its sha256 hashes for `pip install --require-hashes`, resolved under dev.lock (same versions).

- cpu: torch is `2.13.0+cpu`, from PyPI's CPU index (--torch-index-url, default PyTorch's CPU index)
  or a folder of wheels (--find-links).
- gpu: torch is PyPI's `2.13.0`, the CUDA 13.0 build (images/torch-builds.json); for another CUDA build
  give `--gpu-torch-local cu126 --torch-index-url https://download.pytorch.org/whl/cu126`.

The header records a digest of the pyproject.toml tables the lock came from; tests/test_images.py fails
when pyproject.toml changed without `make locks`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
HERE = REPO / "requirements"
PYTHON_VERSION = "3.11"
PLATFORM = "x86_64-manylinux_2_28"
DEFAULT_TORCH_INDEX = {
    "dev": "https://download.pytorch.org/whl/cpu",
    "cpu": "https://download.pytorch.org/whl/cpu",
    "gpu": "",
}
DEFAULT_TORCH_LOCAL = {"dev": "cpu", "cpu": "cpu", "gpu": ""}
SECTIONS = {"dev": ("dependencies", "pipeline", "dev", "build"), "cpu": ("dependencies", "pipeline", "build")}
SECTIONS["gpu"] = SECTIONS["cpu"]
# Packages whose GPU build differs from the tested CPU one: not held to dev.lock's versions.
GPU_OWN = ("torch",)


def pyproject_inputs(pyproject: Path = REPO / "pyproject.toml") -> dict:
    """The tables of pyproject.toml a lock is made from."""
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    return {
        "dependencies": data["project"]["dependencies"],
        "pipeline": data["project"]["optional-dependencies"]["pipeline"],
        "dev": data["project"]["optional-dependencies"]["dev"],
        "build": data["build-system"]["requires"],
    }


def inputs_digest(inputs: dict, kind: str) -> str:
    """A stable digest of the `pyproject_inputs()` sections lock `kind` is made from (in its header)."""
    used = {section: inputs[section] for section in SECTIONS[kind]}
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


def requirement_name(requirement: str) -> str:
    """The normalised project name of a requirement string (`Torch==2` -> `torch`)."""
    name = requirement.split(";")[0]
    for stop in "[<>=!~ (@":
        name = name.split(stop)[0]
    return name.strip().lower().replace("_", "-").replace(".", "-")


def in_file(kind: str, inputs: dict, torch_local: str) -> str:
    """The text of requirements/KIND.in: pyproject's requirements, torch given its local build label."""
    lines = [
        f"# requirements/{kind}.in: written by requirements/lock.py from pyproject.toml; do not edit",
        f"# pyproject-digest: {inputs_digest(inputs, kind)}",
    ]
    for section in SECTIONS[kind]:
        lines.append(f"# [{section}]")
        for req in inputs[section]:
            if requirement_name(req) == "torch" and torch_local:
                req = f"{req.split(';')[0].strip()}+{torch_local}"
            lines.append(req)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lock_pins(path: Path) -> dict[str, str]:
    """`{name: version}` of a lock file's `name==version` lines."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line[0].isspace() and not line.startswith("#") and "==" in line:
            name, _, version = line.split(" ")[0].partition("==")
            pins[requirement_name(name)] = version
    return pins


def _dev_constraints(kind: str) -> Path:
    """dev.lock as constraints for an image lock (without the packages whose GPU build differs)."""
    pins = lock_pins(HERE / "dev.lock")
    own = GPU_OWN if kind == "gpu" else ()
    path = HERE / ".dev-constraints.txt"
    _write(path, "".join(f"{n}=={v}\n" for n, v in sorted(pins.items()) if n not in own))
    return path


def compile_lock(kind: str, args: argparse.Namespace, inputs: dict) -> Path:
    """Write requirements/KIND.in and resolve it into requirements/KIND.lock."""
    uv = shutil.which("uv") or shutil.which("uv", path=str(Path(sys.executable).parent))
    if not uv:
        raise SystemExit("requirements/lock.py: uv is missing (it comes with the dev extra)")
    torch_local = (
        DEFAULT_TORCH_LOCAL[kind] if args.gpu_torch_local is None or kind == "cpu" else args.gpu_torch_local
    )
    torch_index = DEFAULT_TORCH_INDEX[kind] if args.torch_index_url is None else args.torch_index_url
    if torch_index:
        sys.path.insert(0, str(REPO / "images"))
        from index_reachable import reachable

        why = reachable(torch_index, "torch")
        if why:  # e.g. machines that reach PyPI only, with the CPU wheel on disk (--find-links)
            print(f"note: {why}; resolving {kind} without it", file=sys.stderr)
            torch_index = ""
    src = HERE / f"{kind}.in"
    _write(src, in_file(kind, inputs, torch_local))
    cmd = [uv, "pip", "compile", str(src.relative_to(REPO)), "--quiet", "--no-config", "--no-header"]
    cmd += ["--python-version", PYTHON_VERSION, "--python-platform", PLATFORM]
    if kind != "dev":
        cmd += ["--generate-hashes", "--constraint", str(_dev_constraints(kind).relative_to(REPO))]
    cmd += ["--index-url", args.index_url]
    if torch_index:
        cmd += ["--extra-index-url", torch_index]
    # a folder of wheels holds CPU builds (torch 2.13.0+cpu would satisfy the GPU lock's torch==2.13.0)
    for d in args.find_links if kind != "gpu" else []:
        cmd += ["--find-links", d]
    # The existing lock is uv's preference: a re-lock keeps every version that still fits (--upgrade: newest).
    lock = HERE / f"{kind}.lock"
    work = HERE / f".{kind}.lock.tmp"
    if lock.exists() and not args.upgrade:
        shutil.copy(lock, work)
    cmd += ["--output-file", str(work.relative_to(REPO))]
    print("+ " + " ".join(cmd), flush=True)
    try:
        subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, text=True)
        out = work.read_text(encoding="utf-8")
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            f"requirements/lock.py: uv pip compile failed for {kind}:\n{e.stderr.strip()}"
        ) from None
    finally:
        (HERE / ".dev-constraints.txt").unlink(missing_ok=True)
        work.unlink(missing_ok=True)
    # uv names the constraints file it was given; name the lock it came from instead
    out = out.replace("-c requirements/.dev-constraints.txt", "-c requirements/dev.lock")
    header = (
        f"# requirements/{kind}.lock: {'the test environment' if kind == 'dev' else f'the {kind} image'}'s packages"
        f"{'' if kind == 'dev' else ', pinned with hashes'}. Written by `make locks`\n"
        f"# (requirements/lock.py) from requirements/{kind}.in; do not edit.\n"
        f"# pyproject-digest: {inputs_digest(inputs, kind)}\n"
        f"# platform: CPython {PYTHON_VERSION}, {PLATFORM}; torch build: "
        f"{'+' + torch_local if torch_local else 'the package index default'}\n"
    )
    _write(lock, header + out)
    return lock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only", choices=["dev", "cpu", "gpu"], action="append", help="default: all, dev first"
    )
    parser.add_argument("--index-url", default=os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple")
    parser.add_argument(
        "--torch-index-url", help="default: PyTorch's CPU index (dev, cpu), the package index (gpu)"
    )
    parser.add_argument("--gpu-torch-local", help="the GPU torch's local label, e.g. cu126 (default: none)")
    parser.add_argument(
        "--find-links",
        action="append",
        default=os.environ.get("PIP_FIND_LINKS", "").split(),
        help="a folder of wheels for dev/cpu (repeatable; default: PIP_FIND_LINKS)",
    )
    parser.add_argument(
        "--upgrade", action="store_true", help="newest versions, not those of the current locks"
    )
    args = parser.parse_args(argv)
    inputs = pyproject_inputs()
    for kind in args.only or ["dev", "cpu", "gpu"]:
        print(f"wrote {compile_lock(kind, args, inputs).relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
