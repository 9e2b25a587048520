"""Bounded concurrency helpers shared by the walker and the transfer stage.

Starting a task per file would hold 40,000 coroutines for a big sync; instead
`for_each` runs `limit` workers that pull from one shared iterator, so memory
stays flat however long the plan is. `task_group` is anyio's task group, except
that the first failure comes out as itself, not wrapped in an ExceptionGroup,
so callers can catch SyncError and friends. `Processes` runs CPU-bound work
(reading HST's context pickles, crds's best references) on the other cores.
"""

import asyncio
import multiprocessing
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from anyio.abc import TaskGroup

T = TypeVar("T")


@asynccontextmanager
async def task_group() -> AsyncIterator[TaskGroup]:
    try:
        async with anyio.create_task_group() as group:
            yield group
    except BaseExceptionGroup as failures:
        raise _first(failures) from None


async def for_each(items: Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    """Run `work` on every item, `limit` at a time."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # shared: each item goes to exactly one worker
            await work(item)

    async with task_group() as group:
        for _ in range(max(1, limit)):
            group.start_soon(worker)


def cores() -> int:
    """The cores this process may use (all of them where the system cannot say)."""
    if hasattr(os, "sched_getaffinity"):  # not on macOS
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class Processes:
    """A pool of worker processes, one per core this process may use, started when
    first given work. They come from a fork server that imports `preload` once: a
    plain fork would copy a process whose other threads (obstore's) may hold locks,
    and starting each worker afresh would import the package in each. Ctrl-C is this
    process's to handle: the workers ignore it, and end when the pool is closed."""

    def __init__(self, preload: list[str], workers: int | None = None) -> None:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(preload)
        self._executor = ProcessPoolExecutor(
            workers or cores(),
            mp_context=context,
            initializer=signal.signal,
            initargs=(signal.SIGINT, signal.SIG_IGN),
        )

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, func, *args)

    def close(self) -> None:
        self._executor.shutdown(cancel_futures=True)


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
