"""Where runs train while the driver waits: this process, a local process pool, or Ray.

A pool takes tasks (a run, or a pack of one config's seeds; each with a tag of the caller's) as
they come and hands back finished records (a pack's as a list) one task at a time, so a driver
may decide the next task from the last result (a search's next trial, a pruned trial's next
rung). Only the driver writes the store.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol

from .record import RunRecord
from .worker import PackTask, Task, run_task

Result = RunRecord | list[RunRecord]  # a run's record, or a pack's


class Pool(Protocol):
    """What a driver needs of a pool of workers."""

    def submit(self, tag: object, task: Task | PackTask) -> None:
        """Queue a run or a pack; its result comes back from `next` with the tag."""

    def next(self) -> tuple[object, Result]:
        """Wait for any queued task to finish: (its tag, its record or records)."""

    def __len__(self) -> int:
        """Runs queued or running."""

    def close(self) -> None:
        """Stop the workers."""


class LocalPool:
    """Runs in this process (jobs = 1), or in `jobs` spawned worker processes."""

    def __init__(self, jobs: int = 1):
        self.queue: deque[tuple[object, Task | PackTask]] = deque()
        self.futures: dict[Future, object] = {}
        # spawn, not fork: a forked child inherits torch's thread pool in an unusable state.
        self.pool = (ProcessPoolExecutor(max_workers=jobs,
                                         mp_context=multiprocessing.get_context("spawn"))
                     if jobs > 1 else None)

    def submit(self, tag: object, task: Task | PackTask) -> None:
        """Queue a run or a pack."""
        if self.pool is None:
            self.queue.append((tag, task))
        else:
            self.futures[self.pool.submit(run_task, task)] = tag

    def next(self) -> tuple[object, Result]:
        """The next finished task (in this process: the oldest queued one, trained now)."""
        if self.pool is None:
            tag, task = self.queue.popleft()
            return tag, run_task(task)
        done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
        future = next(iter(done))
        return self.futures.pop(future), future.result()

    def __len__(self) -> int:
        return len(self.queue) + len(self.futures)

    def close(self) -> None:
        """Stop the worker processes."""
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
