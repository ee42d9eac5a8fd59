"""Run `fish-speech ARGS` and SIGKILL its whole process group at a chosen write (kill-and-resume tests).

    python killer.py --mode rename|mid-write --at N -- ARGS...

`rename`: die just before the N-th `os.replace` (a finished temporary file that was never renamed).
`mid-write`: at the N-th `os.fsync`, cut the file being synced to half its size, then die (what
`kill -9` in the middle of writing leaves). The group is killed so that worker processes die too,
as when a pod is evicted. Exit status 0 means the kill point was never reached.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

_calls = {"n": 0}


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    finally:
        os.kill(os.getpid(), signal.SIGKILL)


def install(mode: str, at: int) -> None:
    """Patch `os.replace` or `os.fsync` so that the `at`-th call kills the process group."""
    real_replace, real_fsync = os.replace, os.fsync

    def replace(src, dst, *args, **kwargs):
        _calls["n"] += 1
        if _calls["n"] == at:
            _die()
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        _calls["n"] += 1
        if _calls["n"] == at:
            size = os.fstat(fd).st_size
            os.ftruncate(fd, size // 2)
            _die()
        return real_fsync(fd)

    if mode == "rename":
        os.replace = replace
    else:
        os.fsync = fsync


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=["rename", "mid-write"], required=True)
    parser.add_argument("--at", type=int, required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    install(ns.mode, ns.at)
    from fish_speech.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
