"""What the engine asks of a source of files, whichever it is: an S3 bucket
(`source.S3Source`) or a CRDS server (`server_source.ServerSource`). One attempt
per call; the engine's pacer decides on more, and on how many at once."""

from collections.abc import Awaitable, Callable
from typing import Protocol

from .location import Place


class Store(Protocol):
    async def read(
        self, location: Place, name: str, *, size: int | None = None, limit: int | None = None
    ) -> memoryview:
        """A whole file into memory: `size` bytes if given; one over `limit` refused unread."""
        ...

    async def read_range(
        self, location: Place, name: str, start: int, end: int, total: int
    ) -> memoryview:
        """Bytes `start` to `end` (exclusive) of a file of `total` bytes."""
        ...

    async def stream_range(
        self,
        location: Place,
        name: str,
        start: int,
        end: int,
        total: int,
        sink: Callable[[memoryview, int], Awaitable[None]],
    ) -> None:
        """The same, chunk by chunk to `sink`, for parts too big to hold in memory."""
        ...

    async def size(self, location: Place, name: str) -> int:
        """A file's size, from a HEAD."""
        ...

    async def list_names(self, location: Place) -> list[str]:
        """Names of the files directly under `location`."""
        ...
