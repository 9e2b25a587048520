"""A file as one GET: its body whole in memory, verified, written under its
temporary name and settled in the small files' batches (`durable.Batches`: one
flush for many).

Every body in memory holds its size in the transfer's one window of bytes held
(`held`). A body above IN_MEMORY (a file below the ranged threshold) has its
write-back started at once and is still settled in a batch, not by itself: its
own fsync held a writing thread, and its bytes in memory, for as long as the
disk took.
"""

import contextlib
import hashlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..cache.audit import check_received
from ..cache.durable import Batches, create, start_write_back
from ..cache.workfiles import temporary_name
from ..network.store import Store
from ..rules.plans import FileSpec
from .ledger import Received, Restarted, Started
from .pacer import Pacer
from .window import Window

IN_MEMORY = 1 << 20  # files up to this size are read whole and take no lock (`transfer`)
INLINE = 256 << 10  # writing this much is cheaper on the loop than a thread hand-off


@dataclass(frozen=True)
class WholeFile:
    source: Store
    pacer: Pacer
    off_loop: Callable[..., Awaitable[Any]]  # run a blocking call on the transfer's threads
    held: Window  # bytes of bodies held in memory, all files together
    batches: Batches
    durable: bool = True  # flushed before it is renamed into place (`durable`)

    async def fetch(self, spec: FileSpec, final: Path, size: int) -> None:
        """One attempt at `spec` as one GET; the ledger takes back what a failed one
        counted."""
        ledger = self.pacer.ledger
        ledger.record(Started(spec))
        temp = temporary_name(final)
        try:
            await self.held.acquire(size)
            try:
                async with self.pacer.request(f"{spec.source}/{spec.name}", size):
                    data = await self.source.read(spec.source, spec.name, size=size)
                ledger.record(Received(spec, len(data)))
                await self.write(spec, temp, data, size)
            finally:
                self.held.release(size)
            await self.batches.settle(temp, final)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            ledger.record(Restarted(spec))
            raise

    async def write(self, spec: FileSpec, temp: str, data: bytes | memoryview, size: int) -> None:
        """Verify `data` against `spec` and write it under `temp`, for a batch to flush
        and rename."""
        if len(data) <= INLINE:
            _write_verified(temp, data, spec, size, False)
        else:
            write_back = self.durable and len(data) > IN_MEMORY
            await self.off_loop(_write_verified, temp, data, spec, size, write_back)


def _write_verified(
    temp: str, data: bytes | memoryview, spec: FileSpec, size: int, write_back: bool
) -> None:
    """With `write_back`, the disk starts on it now."""
    check_received(spec, len(data), size, hashlib.sha1(data).hexdigest())
    fd = create(temp, data)
    try:
        if write_back:
            start_write_back(fd, 0, len(data))
    finally:
        os.close(fd)
