"""Helpers for the reliability suite: run `fish-speech` steps as a user would, kill them, compare trees.

Imported as `harness` (not from conftest.py: pytest owns the module name "conftest").
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    """A finished `fish-speech` run."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self, *ok: int) -> Result:
        """Assert the exit status is one of `ok` (default 0) and nothing crashed with a traceback."""
        ok = ok or (0,)
        assert self.returncode in ok, (
            f"fish-speech {' '.join(self.args)} exited {self.returncode}:\n{self.output[-4000:]}"
        )
        assert "Traceback (most recent call last)" not in self.output, (
            f"traceback from {self.args}:\n{self.output[-4000:]}"
        )
        return self


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def fish_speech(*args: str | os.PathLike, timeout: float = 600, cwd: Path | None = None) -> Result:
    """Run `python -m fish_speech ARGS` in a child process (as the pipeline's components do)."""
    argv = [os.fspath(a) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "fish_speech", *argv],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=child_env(),
        cwd=cwd or REPO,
        stdin=subprocess.DEVNULL,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def require_commands(*names: str) -> None:
    """Skip (with the reason recorded) when a step this test drives has not landed yet."""
    from fish_speech.cli import COMMANDS

    for name in names:
        module = f"fish_speech.commands.{COMMANDS[name]}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                pytest.skip(f"`fish-speech {name}` is not implemented yet ({module} missing)")
            raise


def temp_files(*roots: Path) -> list[Path]:
    """Files left under the atomic writers' temporary names (`.tmp-*`)."""
    return sorted(p for root in roots if root.exists() for p in root.rglob(".tmp-*"))


def tree_bytes(root: Path, suffixes: Sequence[str]) -> dict[str, bytes]:
    """Relative path -> content of every file with one of `suffixes` under `root` (temp files excluded)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.suffix in suffixes and not p.name.startswith(".tmp-")
    }


KILLER = Path(__file__).resolve().parent / "killer.py"


def killed_at_write(mode: str, at: int, *args: str | os.PathLike, timeout: float = 600) -> int:
    """Run `fish-speech ARGS`, SIGKILLed (with its workers) at the `at`-th rename or fsync.

    Returns the exit status: -9 when the kill point was reached, 0 when the run finished first.
    """
    proc = subprocess.run(
        [sys.executable, str(KILLER), "--mode", mode, "--at", str(at), "--", *map(os.fspath, args)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=child_env(),
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so the kill takes the workers too
    )
    assert proc.returncode in (0, -9), (
        f"killed run failed on its own ({proc.returncode}):\n{proc.stderr[-3000:]}"
    )
    return proc.returncode


def killed_when(condition, *args: str | os.PathLike, timeout: float = 600, poll: float = 0.005) -> int:
    """Run `fish-speech ARGS` and `kill -9` its process group as soon as `condition()` is true.

    Returns the exit status (-9 when killed, else the run's own status).
    """
    import signal
    import tempfile
    import time

    # Output goes to a file, not a pipe: a chatty child must never block on a full pipe.
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fish_speech", *map(os.fspath, args)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        try:
            while proc.poll() is None:
                if condition():
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                if time.monotonic() > deadline:
                    os.killpg(proc.pid, signal.SIGKILL)
                    raise TimeoutError(f"fish-speech {args} did not reach the kill point in {timeout} s")
                time.sleep(poll)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.seek(0)
        err = log.read().decode(errors="replace")
    assert proc.returncode in (0, -9), f"run failed on its own ({proc.returncode}):\n{err[-3000:]}"
    return proc.returncode
