"""Download the plan into the cache, verifying every byte on the way.

Each file goes to a hidden temporary file beside its final path and is renamed
into place (os.replace, atomic on POSIX) only when its size and SHA-1 match
`download_metadata` and its bytes are on stable storage (`durable`); so a final
path only ever holds a verified, durable file.

Files below the threshold are one GET each (`whole`); larger ones are fetched in
ranged parts (`ranged`).

All requests, whole-file or part, share the source's one window of requests in
flight (`pacer`: `jobs` at most); small and large files have their own
workers, so neither waits for the other to drain. Each whole-file GET is one
attempt of the source's retry policy. A file over IN_MEMORY is fetched under its
lock (`locks`), so processes sharing a cache never fetch it at the same time,
and each looks again once it holds the lock. Smaller files take none: a lock's
four system calls cost more than such a file's download, and two processes that
both fetch one each write their own temporary name and rename the same verified
bytes into place.

Bytes already in hand (server_config, the mappings and context pickles planning
read) are not fetched again: `put` writes them under their temporary names as
they come, and `run` puts them in place with the rest, so that a plan that
fails half-way leaves nothing of itself in the cache.
"""

import contextlib
import errno
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio

from ..cache.audit import defect
from ..cache.durable import Batches
from ..cache.locks import Locks
from ..cache.partial import discard_parts
from ..cache.workfiles import temporary_name
from ..errors import SourceError, SyncError
from ..network.connection import READ_TIMEOUT
from ..network.s3errors import one_line
from ..network.store import Store
from ..pool import for_each, task_group
from ..rules.plans import FileSpec
from .ledger import Finished, Received, Report, Started
from .paced import Paced
from .pacer import RETRY_TIME, Pacer
from .ranged import RangedFile
from .whole import IN_MEMORY, WholeFile
from .window import Window

MiB = 1 << 20
THREADS = 4
HELD = 128 * MiB  # bytes of bodies in memory (whole files and parts), all files together
# Files in hand at once, from their request to their place in the cache. More than the
# requests in flight (`jobs`, the pacer's ceiling): a file waits for its batch's flush
# after its request is done, and with as many files as requests (16 to a CRDS server)
# those waits would leave slots empty.
FILES_AT_ONCE = 256
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file size limit
T = TypeVar("T")


@dataclass(frozen=True)
class TransferOptions:
    jobs: int = 256  # the most requests in flight, across all files (`pacer`)
    part_size: int = 8 * MiB
    threshold: int = 64 * MiB  # files at least this big are fetched in ranged parts
    verify: bool = False  # re-hash cached files instead of trusting their size
    retry_time: float = RETRY_TIME  # seconds a request keeps being retried
    timeout: float = READ_TIMEOUT  # seconds without a byte before a request is sent again
    durable: bool = True  # each file flushed to stable storage before its rename (`durable`)
    split_named: bool = False  # part size or threshold given: split as told, not as found

    @property
    def large_workers(self) -> int:
        """Large files downloaded at once; each keeps several parts in flight."""
        return max(1, min(4, self.jobs // 8))

    @property
    def parts_per_file(self) -> int:
        """Parts of one file in flight or waiting for the cursor: the memory bound."""
        return max(2, min(16, self.jobs))


@dataclass
class Transfer:
    """One sync's transfers: the source, its pacer (and the run's ledger through it),
    the cache root and the options. Used as `async with transfer:`, around `put` and
    `run`."""

    source: Store
    pacer: Pacer
    cache: Path
    options: TransferOptions = field(default_factory=TransferOptions)
    # Names the check before the run found missing or wrong; the rest it found valid.
    # None: no such check (a helper's share), so each file is looked at.
    missing: frozenset[str] | None = None
    locks: Locks = field(init=False)  # lock-free once the file system says it has none

    def __post_init__(self) -> None:
        self.ledger = self.pacer.ledger
        self.locks = Locks(self.ledger.note)
        self._made_dirs: set[Path] = set()
        # Few threads: they exist to hash and write big buffers on the second core;
        # dozens of them only fight over the GIL.
        self._threads = anyio.CapacityLimiter(THREADS)
        # Up to `jobs` files may be read at once: at 1 MiB each that alone could pass
        # the memory the whole run should use; so every body in memory holds its size here.
        self._held = Window(HELD)
        self._batches = Batches(self.cache, self.options.durable)
        self._whole = WholeFile(
            self.source, self.pacer, self._off_loop, self._held, self._batches, self.options.durable
        )
        # by `put`: name -> (spec, temporary name, size)
        self._written: dict[str, tuple[FileSpec, str, int]] = {}

    async def __aenter__(self) -> "Transfer":
        return self

    async def __aexit__(self, *exc: object) -> None:
        """No batch starts after this; what `put` wrote and `run` did not place goes."""
        self._batches.close()
        for _, temp, _ in self._written.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        self._written = {}

    async def put(self, spec: FileSpec, data: bytes) -> None:
        """Verify and write bytes in hand under `spec`'s temporary name, for `run` to
        put in place. A file in place already is left alone; one that cannot be
        written is left to `run` to fetch (a full disk ends the sync at once)."""
        final = self.cache / spec.path
        if spec.name in self._written or defect(final, len(data), None) is None:
            return
        temp = temporary_name(final)
        try:
            self._make_dirs(final)
            await self._whole.write(spec, temp, data, len(data))
        except (SourceError, OSError) as exc:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
                raise _no_room(final, exc) from None
            return
        self._written[spec.name] = (spec, temp, len(data))

    async def run(self, plans: Iterable[FileSpec]) -> Report:
        written, plan = [], []
        for spec in plans:
            if (kept := self._written.get(spec.name)) is not None:
                written.append(kept)
            elif spec.size is not None and not self._in_doubt(spec):  # found valid: no task
                self.ledger.record(Finished(spec, "skipped", spec.size))
            else:
                plan.append(spec)
        large = [s for s in plan if s.size is not None and s.size >= self.options.threshold]
        small = [s for s in plan if s.size is None or s.size < self.options.threshold]
        at_once = max(self.options.jobs, FILES_AT_ONCE)
        async with task_group() as group:
            group.start_soon(for_each, written, self._place, at_once)
            group.start_soon(for_each, large, self._one, self.options.large_workers)
            group.start_soon(for_each, small, self._one, at_once)
        return self.ledger.report

    async def _place(self, written: tuple[FileSpec, str, int]) -> None:
        """A file `put` wrote, into place."""
        spec, temp, size = written
        self.ledger.record(Started(spec))
        self.ledger.record(Received(spec, size))
        try:
            await self._batches.settle(temp, self.cache / spec.path)
        except OSError as exc:
            self.ledger.record(Finished(spec, "failed", size, one_line(exc)))
            return
        del self._written[spec.name]
        self.ledger.record(Finished(spec, "downloaded", size))

    async def _one(self, spec: FileSpec) -> None:
        final = self.cache / spec.path
        size = 0
        try:
            size = await self._expected_size(spec)
            resumed = None
            if self._in_doubt(spec) and not await self._found_valid(final, spec, size):
                resumed = await self._fetch(spec, final, size)
        except (SourceError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
                raise _no_room(final, exc) from None
            self.ledger.record(Finished(spec, "failed", size, one_line(exc)))
            return
        if resumed is None:
            self.ledger.record(Finished(spec, "skipped", size))
        else:
            self.ledger.record(Finished(spec, "downloaded", size, resumed=resumed))

    async def _fetch(self, spec: FileSpec, final: Path, size: int) -> int | None:
        """Fetch `spec`; returns how many bytes a killed run had left done, or None if
        another process sharing the cache put a valid file there first. A small file
        is fetched without a lock (see the module's note); a bigger one under its
        lock, looking again once the lock is ours."""
        self._make_dirs(final)
        where = f"{spec.source}/{spec.name}"
        if size <= IN_MEMORY:
            await self.pacer.retry(where, lambda: self._whole.fetch(spec, final, size))
            return 0
        async with self.locks.hold(final) as alone:
            if await self._is_valid(final, spec, size):
                return None
            if size >= self.options.threshold:
                ranged = RangedFile(
                    self.source,
                    self.pacer,
                    self._off_loop,
                    self._held,
                    self.options.part_size,
                    self.options.parts_per_file,
                    self.options.split_named,
                    self.options.durable,
                    private=not alone,
                )
                return await ranged.fetch(spec, final, size)
            await self.pacer.retry(where, lambda: self._whole.fetch(spec, final, size))
            if alone:
                discard_parts(final)  # an earlier run's, split by a smaller threshold
        return 0

    def _make_dirs(self, final: Path) -> None:
        if final.parent not in self._made_dirs:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(final.parent)

    def _in_doubt(self, spec: FileSpec) -> bool:
        """Whether `spec` needs a look: the check before the run found it missing or
        wrong, there was no such check, or every file is to be re-hashed."""
        return self.missing is None or spec.name in self.missing or self.options.verify

    async def _found_valid(self, final: Path, spec: FileSpec, size: int) -> bool:
        """Whether `spec` is in place already. One the check before the run found
        missing is not looked at again here: a small one is fetched (a stat each cost
        more than the rare fetch another process made needless), a bigger one is looked
        at once its lock is held (`_fetch`)."""
        if self.missing is not None and not self.options.verify:
            return False
        return await self._is_valid(final, spec, size)

    async def _expected_size(self, spec: FileSpec) -> int:
        if spec.size is not None:
            return spec.size
        return await Paced(self.source, self.pacer).size(spec.source, spec.name)

    async def _is_valid(self, final: Path, spec: FileSpec, size: int) -> bool:
        """By size (a stat, on the loop), or also by SHA-1 (in a thread) with verify."""
        sha1 = spec.sha1 if self.options.verify else None
        if sha1 is None:
            return defect(final, size, None) is None
        return await self._off_loop(defect, final, size, sha1) is None

    async def _off_loop(self, func: Callable[..., T], *args: object) -> T:
        return await anyio.to_thread.run_sync(func, *args, limiter=self._threads)


def _no_room(final: Path, exc: OSError) -> SyncError:
    """Every other file would fail the same way: the whole sync stops."""
    return SyncError(
        f"{final.parent}: {exc.strerror}; free space in the cache's file system "
        "and run again (what is done is kept)"
    )
