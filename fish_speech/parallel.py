"""Run a function over many small jobs in worker processes, in order, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

J = TypeVar("J")
R = TypeVar("R")

MIN_JOBS_FOR_POOL = 8  # below this, starting worker processes costs more than it saves


def map_in_workers(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    num_workers: int = 1,
    desc: str = "",
    unit: str = "clip",
    progress: bool = True,
    chunksize: int = 4,
) -> list[R]:
    """`[fn(j) for j in jobs]`, spread over `num_workers` processes when that pays off.

    Results come back in the order of `jobs` whatever the worker count, so reports do not depend
    on it. `fn` must be a module-level function (it is pickled to the workers).
    """
    bar = dict(total=len(jobs), desc=desc, unit=unit, disable=not progress)
    if num_workers <= 1 or len(jobs) <= MIN_JOBS_FOR_POOL:
        return [fn(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs))) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=chunksize), **bar))


def imap_in_workers(
    fn: Callable[[J], R],
    jobs: Sequence[J],
    num_workers: int = 1,
    chunksize: int = 4,
    min_jobs: int = MIN_JOBS_FOR_POOL,
    initializer: Callable[[], None] | None = None,
) -> Iterator[R]:
    """`fn(j)` for each job, yielded in the order of `jobs` as they finish, from `num_workers` processes
    when there are more than `min_jobs` jobs (for a consumer that writes results as they come)."""
    if num_workers <= 1 or len(jobs) <= min_jobs:
        yield from map(fn, jobs)
        return
    with ProcessPoolExecutor(max_workers=min(num_workers, len(jobs)), initializer=initializer) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask: a container's or taskset's limit), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)
