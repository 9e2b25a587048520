"""A large file as concurrent ranged GETs, verified as the last byte lands.

Parts are written at their offsets as they stream, while a hashing cursor
follows the contiguous completed prefix, reading parts back in order from the
page cache: the SHA-1 is known when the last part arrives, and memory holds only
the chunks in flight, whatever the file's size. Completed parts are recorded
beside the temporary file (`partial`), so a killed run resumes where it stopped.
Each part is one attempt of the source's retry policy; a file whose parts all
arrived but whose SHA-1 does not match is fetched once more, from nothing.
"""

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .audit import check_received
from .partial import PartialFile
from .plan import FileSpec
from .pool import task_group
from .progress import Progress
from .retry import Mismatch
from .s3errors import one_line
from .source import S3Source


@dataclass(frozen=True)
class RangedFile:
    source: S3Source
    progress: Progress
    off_loop: Callable[..., Awaitable[Any]]  # run a blocking call on the transfer's threads
    part_size: int
    parts_in_flight: int  # parts fetched or waiting for the cursor: the memory bound

    async def fetch(self, spec: FileSpec, final: Path, size: int) -> int:
        """Fetch `spec` into `final`; returns the bytes a killed run had left done."""
        self.progress.started(spec)
        resumed = 0
        for fresh_start in (False, True):
            partial = await self.off_loop(PartialFile.open, final, size, spec.sha1, self.part_size)
            try:
                if partial.done:
                    resumed = sum(partial.part_length(i) for i in partial.done)
                    self.progress.advanced(spec, resumed)
                check_received(spec, size, size, await self._parts(spec, partial))
            except Mismatch as exc:
                partial.discard()  # the parts on disk are not trustworthy
                self.progress.restart(spec)
                if fresh_start:
                    raise
                self.source.retry.record(f"{spec.source}/{spec.name}", one_line(exc), 1, 0.0)
                continue
            except BaseException:
                partial.close()  # keep completed parts for the next run
                raise
            partial.finish()
            return resumed
        raise AssertionError("unreachable")

    async def _parts(self, spec: FileSpec, partial: PartialFile) -> str:
        """Fetch the missing parts concurrently; hash all of them in order."""
        count = partial.count
        ready = [anyio.Event() for _ in range(count)]
        window = anyio.Semaphore(self.parts_in_flight)
        digest = hashlib.sha1()

        async def fetch(index: int) -> None:
            start, length = index * partial.part_size, partial.part_length(index)
            byte_range = (start, start + length - 1)
            await self.source.retry.run(
                lambda: self.source.copy_into(
                    spec.source, spec.name, partial.fd, start, length, byte_range
                ),
                f"{spec.source}/{spec.name} bytes {start}-{byte_range[1]}",
            )
            partial.mark_done(index)
            self.progress.advanced(spec, length)
            ready[index].set()

        async def schedule(group: TaskGroup) -> None:
            for index in range(count):
                await window.acquire()  # released by the cursor
                if index in partial.done:
                    ready[index].set()
                else:
                    group.start_soon(fetch, index)

        async with task_group() as group:
            group.start_soon(schedule, group)
            for index in range(count):  # the hashing cursor
                await ready[index].wait()
                await self.off_loop(partial.hash_part, index, digest)
                window.release()
        return digest.hexdigest()
