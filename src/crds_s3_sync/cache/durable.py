"""Durable before visible: a file's bytes reach stable storage before its final
name appears, and the name itself after.

Without this, a power cut or a node crash can bring back a renamed file at its
full size with zeros for content (the rename reached the disk before the data),
and a later run, trusting sizes, would keep it.

Small files are settled in batches, so the cost is shared: each is written under
its temporary name and handed to `Batches`; within BATCH_WAIT (or once BATCH
files wait) one flush covers them all, on a worker thread: a single `syncfs` of
the cache's file system where Linux has it, else an `fsync` of each file. Then
each is renamed, and each directory that gained a name is flushed once. A big
file is flushed by itself (`settle`), which costs little next to its download.
`--no-fsync` skips all of it, for throwaway caches (a CI runner's scratch disk).
"""

import asyncio
import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

from .workfiles import temporary_name

BATCH = 512  # files settled by one flush at most
BATCH_WAIT = 0.01  # seconds the first file of a batch waits for others


_LIBC = ctypes.CDLL(None, use_errno=True)
_SYNCFS = getattr(_LIBC, "syncfs", None)  # Linux: one flush of a whole file system
_SYNC_FILE_RANGE = getattr(_LIBC, "sync_file_range", None)  # Linux
if _SYNC_FILE_RANGE is not None:
    _SYNC_FILE_RANGE.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
SYNC_FILE_RANGE_WRITE = 2


def start_write_back(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing `length` bytes at `offset` to the disk now, without
    waiting: a big file's parts go to the disk while the rest arrive, so the flush
    before its rename finds little left to do. (A hint: the flush still decides.)"""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def flush_file_system(anywhere: Path) -> bool:
    """Flush the file system holding `anywhere`; False where that cannot be done
    in one call (then each file is flushed by itself)."""
    if _SYNCFS is None:
        return False
    fd = os.open(anywhere, os.O_RDONLY)
    try:
        if _SYNCFS(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, os.strerror(errno), str(anywhere))
    finally:
        os.close(fd)
    return True


def flush_directories(directories: Iterable[Path]) -> None:
    """Flush directory entries (new names) of each directory once."""
    for directory in set(directories):
        _fsync(directory)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """`os.write` until every byte is written: bare system calls, as small files are
    mostly such overhead (pathlib's and io's layers cost more than the write)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def create(temp: str, data: bytes | memoryview) -> int:
    """A new file `temp` (it must not exist) holding `data`; returns it open, for the
    caller to close or `settle`."""
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_at(fd: int, data: memoryview | bytes, offset: int) -> None:
    """`os.pwrite` until every byte is written at `offset`."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def settle(fd: int, temp: str | Path, final: Path, durable: bool) -> None:
    """One big file: its bytes flushed, then renamed, then its directory flushed.
    Closes `fd`. Blocking: call it on a worker thread."""
    try:
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    if durable:
        flush_directories([final.parent])


class Batches:
    """Small files settled together; `settle` returns once the file is in place."""

    def __init__(self, cache: Path, durable: bool) -> None:
        self.cache, self.durable = cache, durable
        self._waiting: list[tuple[str, Path, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None

    async def settle(self, temp: str, final: Path) -> None:
        if not self.durable:
            os.replace(temp, final)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((temp, final, done))
        if len(self._waiting) >= BATCH:
            self._start()
        elif self._timer is None:
            self._timer = loop.call_later(BATCH_WAIT, self._start)
        await asyncio.shield(done)

    def close(self) -> None:
        """The run is over (or cancelled): no batch may start after this. Files still
        waiting belong to cancelled transfers, which remove their temporary files."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for _, _, done in self._waiting:
            done.cancel()
        self._waiting = []

    def _start(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting = self._waiting, []
        if batch:  # the executor keeps the flush alive until it is done
            asyncio.get_running_loop().run_in_executor(None, self._flush, batch)

    def _flush(self, batch: list[tuple[str, Path, asyncio.Future[None]]]) -> None:
        """On a worker thread: flush, rename, flush the directories; each file's
        future gets its own outcome."""
        loop = batch[0][2].get_loop()
        outcomes: list[BaseException | None] = [None] * len(batch)
        try:
            if not flush_file_system(self.cache):
                for index, (temp, _, _) in enumerate(batch):
                    outcomes[index] = _fsync_path(temp)
            for index, (temp, final, _) in enumerate(batch):
                if outcomes[index] is None:
                    try:
                        os.replace(temp, final)
                    except OSError as exc:
                        outcomes[index] = exc
            renamed = zip(batch, outcomes, strict=True)
            flush_directories(final.parent for (_, final, _), outcome in renamed if not outcome)
        except OSError as exc:
            outcomes = [outcome or exc for outcome in outcomes]
        for (_, _, done), outcome in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_resolve, done, outcome)


def _fsync_path(path: str) -> OSError | None:
    """One file of a batch flushed by itself: its failure is its own outcome."""
    try:
        _fsync(path)
    except OSError as exc:
        return exc
    return None


def _resolve(done: asyncio.Future[None], outcome: BaseException | None) -> None:
    if done.cancelled():
        return
    if outcome is None:
        done.set_result(None)
    else:
        done.set_exception(outcome)
        done.add_done_callback(asyncio.Future.exception)  # retrieved, even if nobody waits


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """`path` holds `data` whole or not at all; flushed before it appears if `durable`
    (crds's config files; a resumable download's record need not be, as the file
    is hashed whole before it is used)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_name(path)
    try:
        settle(create(temp, data), temp, path, durable)
    finally:
        Path(temp).unlink(missing_ok=True)
