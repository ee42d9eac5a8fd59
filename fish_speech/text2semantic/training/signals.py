"""Stopping a training run cleanly: SIGTERM / SIGINT -> checkpoint of the step in hand -> exit 143 / 130.

The handlers only record the signal; the training loop checks the record after each optimizer step,
agrees on it with every other rank (a signal may reach only one of them: a preempted node, `kill` of
one worker), writes the checkpoint of that step and stops. DataLoader workers ignore both signals,
so a signal sent to the whole process group (what `timeout`, Ctrl-C and many schedulers do) cannot
kill them before the main process has saved; they exit when the main process shuts the loader down.

Lightning registers its own SIGTERM handler at fit start (it only broadcasts rank 0's state, from
inside the handler), so `StopSignals.install` is called again from the training callback once the
loop has started, replacing it.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import torch

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Records the first SIGTERM/SIGINT instead of dying; a second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only; whoever runs it there handles them
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current is not self._handle:
                self._previous.setdefault(sig, current)
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            self.signum = signum
            log.warning(
                "%s received: finishing the step in hand, writing its checkpoint, then stopping",
                signal.Signals(signum).name,
            )
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self, world_size: int) -> int:
        """The signal any rank received (0: none). A collective when distributed: call it on every rank.

        Under NCCL the default group also has a gloo backend for CPU tensors (see `distributed.py`),
        so this costs a small host-side message per step and no GPU synchronisation.
        """
        if world_size <= 1:
            return self.signum or 0
        device = "cpu"
        if "gloo" not in str(torch.distributed.get_backend()):
            # NCCL only (Lightning's own launcher for several GPUs of one machine): a device tensor
            device = f"cuda:{torch.cuda.current_device()}"
        flag = torch.tensor([self.signum or 0], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())

    def __enter__(self) -> StopSignals:
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()


def exit_status(signum: int) -> int:
    """The shell's status for a process ended by `signum` (143 for SIGTERM, 130 for SIGINT)."""
    return 128 + int(signum)


def ignore_stop_signals_in_worker(worker_id: int) -> None:
    """DataLoader `worker_init_fn`: the main process decides when workers end (see module doc)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
