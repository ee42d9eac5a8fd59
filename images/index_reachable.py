#!/usr/bin/env python3
"""Print `yes` when a Python package index answers for a project within a few seconds, else a note on stderr.

    python images/index_reachable.py https://download.pytorch.org/whl/cpu torch

The Makefile asks this before it adds PyTorch's CPU index: pip retries an unreachable index for minutes
before it falls back to the others. Standard library only (it runs before .venv exists).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def reachable(index_url: str, project: str, timeout: float = 5.0) -> str | None:
    """None when `index_url` serves a page for `project`, else why not (one line)."""
    url = f"{index_url.rstrip('/')}/{project}/"
    if url.startswith("file://"):
        from pathlib import Path

        return None if Path(url[len("file://") :]).is_dir() else f"{url}: no such folder"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return None if response.status == 200 else f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as e:
        return f"{url}: HTTP {e.code} {e.reason}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"{url}: {getattr(e, 'reason', e)}"


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0]:
        return 0
    why = reachable(argv[0], argv[1])
    if why is None:
        print("yes")
    else:
        print(
            f"note: {why}; installing {argv[1]} from the other indexes and local wheels "
            "(on Linux x86-64 PyPI's torch 2.13.0 is the CUDA 13 build, ~3 GB with its NVIDIA wheels; "
            "set TORCH_INDEX_URL to a reachable CPU index or mirror to avoid it)",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
