"""One downloader per file across processes sharing a cache, even on NFS.

Before fetching a file over 1 MiB (`transfer` says why smaller ones go
without), a sync takes an exclusive POSIX record lock (`lockf`) on
`.NAME.lock` beside it. POSIX locks work on local file systems and on NFS
(through the lock manager or NFSv4's own locking), unlike `flock` on some
clients. The kernel (or the NFS server, when the lease lapses) drops the lock
when its process dies, however it dies, so a lock file left behind by a killed
run is just an empty file: it never blocks a later run. The holder deletes
the lock file before letting go, and whoever gets a lock checks that the file
it locked is still the one at that path, so two processes never hold locks on
two different files of one name.

Where the file system has no locks (`ENOLCK`: NFS without a lock manager;
`ENOSYS`, `EOPNOTSUPP`: Lustre mounted without `flock`) the sync says so once and
goes on lock-free: every file is still verified and renamed into place
atomically, but two runs sharing the cache may both fetch one.
"""

import errno
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

POLL = (0.05, 0.5)  # first and longest wait between tries for a busy lock
BUSY = (errno.EACCES, errno.EAGAIN)  # what lockf answers while another process holds it
UNSUPPORTED = (errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP)


def lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


class Locks:
    """The file locks of one run, lock-free from the first time the file system says
    it has none (`say` tells the user, once)."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self.lock_free = False

    @asynccontextmanager
    async def hold(self, final: Path) -> AsyncIterator[None]:
        """Hold the lock for `final`, waiting (without blocking the loop) while another
        process holds it."""
        fd = await self._take(lock_path(final)) if not self.lock_free else None
        try:
            yield
        finally:
            if fd is not None:
                lock_path(final).unlink(missing_ok=True)  # ours: nobody can take it now
                os.close(fd)  # closing drops the lock

    async def _take(self, path: Path) -> int | None:
        import fcntl  # POSIX only; `platforms.check_platform` refused the rest

        delay = POLL[0]
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:  # another user's, not writable by us
                if not remove_if_free(path):
                    await anyio.sleep(delay)
                    delay = min(POLL[1], delay * 2)
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in UNSUPPORTED:
                    path.unlink(missing_ok=True)
                    self._go_lock_free(path, exc)
                    return None
                if exc.errno not in BUSY:
                    raise
                await anyio.sleep(delay)
                delay = min(POLL[1], delay * 2)
                continue
            if _same_file(fd, path):
                return fd
            os.close(fd)  # its holder removed it before we got it: lock the new one

    def _go_lock_free(self, path: Path, exc: OSError) -> None:
        if not self.lock_free:
            self.lock_free = True
            self._say(
                f"{path.parent}: no file locks here ({errno.errorcode.get(exc.errno or 0)}); "
                "going on without them: files are still verified and renamed into place "
                "whole, but runs sharing this cache may fetch the same file"
            )


def remove_if_free(path: str | Path) -> bool:
    """Remove the lock file `path` if nobody holds it, as its holder would have
    (locked, and only if still the file locked); True if it went. A shared lock
    is all a file we may not write allows, and enough to exclude a holder."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        if not _same_file(fd, path):
            return False
        os.unlink(path)
    except OSError as exc:
        if exc.errno in BUSY or exc.errno in UNSUPPORTED or exc.errno == errno.ENOENT:
            return False
        raise
    finally:
        os.close(fd)
    return True


def _same_file(fd: int, path: str | Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
