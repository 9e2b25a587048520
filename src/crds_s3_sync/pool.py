"""A fixed number of workers over a stream of items.

Starting a task per file would hold 40,000 coroutines for a big sync; instead
`limit` workers pull from one shared iterator, so memory stays flat however
long the plan is, and the first exception cancels the rest.
"""

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

T = TypeVar("T")


async def for_each(items: Iterable[T], work: Callable[[T], Awaitable[None]], limit: int) -> None:
    """Run `work` on every item, `limit` at a time; re-raise the first failure as itself."""
    iterator = iter(items)

    async def worker() -> None:
        for item in iterator:  # shared: each item goes to exactly one worker
            await work(item)

    try:
        async with anyio.create_task_group() as group:
            for _ in range(max(1, limit)):
                group.start_soon(worker)
    except BaseExceptionGroup as failures:
        # Callers handle SyncError and friends, not task-group wrappers.
        raise _first(failures) from None


def _first(group: BaseExceptionGroup) -> BaseException:
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first
