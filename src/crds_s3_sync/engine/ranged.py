"""A large file as ranged GETs, hashed in order from memory as the parts land.

Each part arrives whole in memory (obstore hands over its bytes) and is written
at its offset on a worker thread; a hashing cursor then feeds the parts, in
order, to SHA-1 on another thread, so the digest is known when the last part
arrives and no byte is read back from the disk (reading 2 GiB back cost as much
as receiving it), and each part is handed to the disk's write-back once hashed,
so the flush before the rename finds little left. Every part in memory holds its
size in the transfer's one window of bytes held (`held`): that window, not the
file's size, bounds memory. Parts bigger than HELD_AT_MOST (an explicit
--part-size can ask for any size) are written chunk by chunk and read back
instead.

How many parts are in flight is found per file by the pacer, with the same hill
climb as the run's requests (`window`): it starts at two (one arriving while
the one before is hashed) and grows while the file's throughput does, so a fast
link fetches a big file as a pipelined stream and a far one as many parts at
once. An explicit part size or threshold (`forced`) keeps a fixed fan-out.

Completed parts are recorded beside the temporary file (`partial`), so a killed
run resumes where it stopped, with the part size it started with; those parts
are read back for hashing, being nowhere else. A source that answers a range
with the whole file (a CRDS server may) gets the file asked from its start as
one part. Each part is one request of the
pacer; a file whose parts all arrived but whose SHA-1 does not match is fetched
once more, from nothing.
"""

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from ..cache.audit import check_received
from ..cache.durable import start_write_back, write_at
from ..cache.partial import PartialFile
from ..errors import Mismatch, WholeOnly
from ..network.s3errors import one_line
from ..network.store import Store
from ..pool import task_group
from ..rules.plans import FileSpec
from .ledger import Received, Restarted, Started
from .pacer import Pacer
from .window import Window

HELD_AT_MOST = 32 << 20  # bytes of one part kept in memory for hashing


@dataclass(frozen=True)
class RangedFile:
    source: Store
    pacer: Pacer
    off_loop: Callable[..., Awaitable[Any]]  # run a blocking call on the transfer's threads
    held: Window  # bytes of bodies held in memory, all files together
    part_size: int  # for a fresh start; a resumed file keeps its own
    parts_in_flight: int  # the most parts in flight or waiting for the cursor
    forced: bool = False  # the user named the split: always `parts_in_flight` at once
    durable: bool = True  # flushed before it is renamed into place (`durable`)
    private: bool = False  # another process may fetch it at once (`partial`)

    async def fetch(self, spec: FileSpec, final: Path, size: int) -> int:
        """Fetch `spec` into `final`; returns the bytes a killed run had left done."""
        self.pacer.ledger.record(Started(spec))
        try:
            return await self._fetch(spec, final, size, self.part_size)
        except WholeOnly:  # a server that ignores Range: from the start, in one part
            self.pacer.ledger.record(Restarted(spec))
            return await self._fetch(spec, final, size, size)

    async def _fetch(self, spec: FileSpec, final: Path, size: int, part_size: int) -> int:
        for fresh_start in (False, True):
            partial = await self.off_loop(
                PartialFile.open, final, size, spec.sha1, part_size, self.private
            )
            resumed = 0
            try:
                if partial.done:
                    resumed = sum(partial.part_length(i) for i in partial.done)
                    self.pacer.ledger.record(Received(spec, resumed))
                check_received(spec, size, size, await self._parts(spec, partial))
            except Mismatch as exc:
                partial.discard()  # the parts on disk are not trustworthy
                self.pacer.ledger.record(Restarted(spec))
                if fresh_start:
                    raise
                self.pacer.ledger.retrying(f"{spec.source}/{spec.name}", one_line(exc), 1, 0.0)
                continue
            except WholeOnly:
                partial.discard()  # its parts are of a split the source does not serve
                raise
            except BaseException:
                partial.close()  # keep completed parts for the next run
                raise
            await self.off_loop(partial.finish, self.durable)
            return resumed
        raise AssertionError("unreachable")

    async def _parts(self, spec: FileSpec, partial: PartialFile) -> str:
        """Fetch the missing parts, as many at once as pays; hash all of them in order."""
        count = partial.count
        ready = [anyio.Event() for _ in range(count)]
        start = self.parts_in_flight if self.forced else 2
        pace = self.pacer.parts(self.parts_in_flight, start)
        digest = hashlib.sha1()
        # part -> its bytes, held until hashed: parts done by an earlier run, or too big
        # to hold, have none
        held: dict[int, memoryview] = {}

        async def fetch(index: int) -> None:
            start, length = index * partial.part_size, partial.part_length(index)
            end, total = start + length, partial.size
            where = f"{spec.source}/{spec.name} bytes {start}-{end - 1}"

            async def attempt() -> memoryview | None:
                async with self.pacer.request(where, length):
                    if length > HELD_AT_MOST:
                        await self.source.stream_range(
                            spec.source,
                            spec.name,
                            start,
                            end,
                            total,
                            lambda chunk, at: self.off_loop(write_at, partial.fd, chunk, at),
                        )
                        return None
                    return await self.source.read_range(spec.source, spec.name, start, end, total)

            data = await self.pacer.retry(where, attempt)
            if data is not None:
                await self.off_loop(write_at, partial.fd, data, start)
                held[index] = data
            if partial.mark_done(index):
                await self.off_loop(partial.save)
            self.pacer.ledger.record(Received(spec, length))
            if not self.forced:
                pace.done(length)
            ready[index].set()

        async def schedule(group: TaskGroup) -> None:
            for index in range(count):
                await pace.slots.acquire()  # released by the cursor
                if index in partial.done:
                    ready[index].set()
                    continue
                length = partial.part_length(index)
                if length <= HELD_AT_MOST:
                    await self.held.acquire(length)  # released once hashed
                    weights[index] = length
                group.start_soon(fetch, index)

        weights: dict[int, int] = {}  # parts holding bytes of the window `held`
        try:
            async with task_group() as group:
                group.start_soon(schedule, group)
                for index in range(count):  # the hashing cursor
                    await ready[index].wait()
                    data = held.pop(index, None)
                    if data is None:  # only the disk has it
                        await self.off_loop(partial.hash_part, index, digest)
                    else:
                        await self.off_loop(digest.update, data)
                        del data
                    if index in weights:
                        self.held.release(weights.pop(index))
                    if self.durable:  # to the disk now, not all at the end
                        start = index * partial.part_size
                        start_write_back(partial.fd, start, partial.part_length(index))
                    pace.slots.release()
        finally:
            for weight in weights.values():
                self.held.release(weight)
        return digest.hexdigest()
