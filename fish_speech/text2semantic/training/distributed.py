"""The world of a `torchrun` launch (any `--nnodes` / `--nproc-per-node`), read from its environment.

torchrun sets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`
in every worker. Training opens the process group itself, before Lightning (which then adopts it), so
that the ranks can agree on the checkpoint to resume from before any of them loads it. On GPUs the
group has NCCL for CUDA tensors and gloo for CPU tensors, so small control messages (the stop-signal
agreement after each step) never synchronise the device.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

import torch

from fish_speech.errors import UserError

log = logging.getLogger(__name__)

# Lightning's default: long enough for rank 0 to write a full fine-tuning checkpoint while the others wait
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def num_nodes(self) -> int:
        return self.world_size // self.local_world_size

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env(env: dict[str, str] | None = None) -> World:
    """The launcher's world; a single process when `RANK`/`WORLD_SIZE` are not both set."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return World()
    try:
        world = World(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", "0")),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", "1")),
        )
    except ValueError as e:
        raise UserError(f"bad distributed environment (RANK/WORLD_SIZE/LOCAL_*): {e}") from None
    if not (0 <= world.rank < world.world_size) or world.world_size % world.local_world_size:
        raise UserError(f"inconsistent distributed environment: {world}")
    return world


def init_process_group(world: World, cuda: bool) -> None:
    """Open the default process group of a torchrun world (nothing to do for one process)."""
    import torch.distributed as dist

    if not world.distributed or dist.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(world.local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=TIMEOUT)
    log.info(
        "rank %d of %d (%d node(s) × %d), backend %s",
        world.rank,
        world.world_size,
        world.num_nodes,
        world.local_world_size,
        backend,
    )


def from_rank_zero(value: Any) -> Any:
    """Rank 0's `value` on every rank (the value itself when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_all_ranks(problem: str | None) -> None:
    """Raise the same UserError on every rank when any rank found a problem (else every rank would hang)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        if problem:
            raise UserError(problem)
        return
    found: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(found, (socket.gethostname(), problem))
    for rank, (host, text) in enumerate(found):
        if text:
            raise UserError(f"rank {rank} ({host}): {text}")
