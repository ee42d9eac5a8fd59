#!/usr/bin/env python3
"""Write a PEP 503 simple index over a folder of wheels and sdists: a package index for an air-gapped build.

    python images/wheelhouse_index.py WHEELHOUSE      # files in WHEELHOUSE/files -> WHEELHOUSE/simple/

Serve WHEELHOUSE over HTTP (`python3 -m http.server --directory WHEELHOUSE`) and pass
`http://HOST:PORT/simple/` as PIP_INDEX_URL and TORCH_INDEX_URL (images/airgap.sh does). Each link carries
the file's sha256, as PyPI's do. Standard library only.
"""

from __future__ import annotations

import hashlib
import html
import re
import sys
from pathlib import Path


def project_name(filename: str) -> str:
    """The PEP 503 normalised project name of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        stem = filename.split("-")[0]
    else:
        stem = re.sub(r"-\d.*$", "", re.sub(r"\.(tar\.gz|zip|tar\.bz2)$", "", filename))
    return re.sub(r"[-_.]+", "-", stem).lower()


def write_index(root: Path) -> int:
    """Write root/simple/NAME/index.html for every file in root/files; returns the number of projects."""
    files = sorted(p for p in (root / "files").iterdir() if p.is_file())
    projects: dict[str, list[Path]] = {}
    for f in files:
        projects.setdefault(project_name(f.name), []).append(f)
    simple = root / "simple"
    simple.mkdir(parents=True, exist_ok=True)
    for name, members in projects.items():
        links = []
        for f in members:
            digest = hashlib.sha256(f.read_bytes()).hexdigest()
            href = f"../../files/{html.escape(f.name)}#sha256={digest}"
            links.append(f'<a href="{href}">{html.escape(f.name)}</a><br>')
        (simple / name).mkdir(exist_ok=True)
        (simple / name / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n", encoding="utf-8"
        )
    (simple / "index.html").write_text(
        "<!DOCTYPE html><html><body>\n"
        + "\n".join(f'<a href="{n}/">{n}</a><br>' for n in sorted(projects))
        + "\n</body></html>\n",
        encoding="utf-8",
    )
    return len(projects)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    n = write_index(Path(sys.argv[1]))
    print(f"wheelhouse_index: {n} projects in {Path(sys.argv[1]) / 'simple'}")
