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

import contextlib
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
    async def hold(self, final: Path) -> AsyncIterator[bool]:
        """Hold the lock for `final`, waiting (without blocking the loop) while another
        process holds it. Yields whether it is this process's alone: it is not where
        there are no locks, nor where the lock file is another user's that we may not
        write (then a shared lock still keeps every exclusive holder out, but another
        process may share it)."""
        path = lock_path(final)
        taken = await self._take(path, final) if not self.lock_free else None
        try:
            yield taken is not None and taken[1]
        finally:
            if taken is not None:
                fd, alone = taken
                if alone:
                    path.unlink(missing_ok=True)  # ours: nobody can take it now
                os.close(fd)  # closing drops the lock

    async def _take(self, path: Path, final: Path) -> tuple[int, bool] | None:
        import fcntl  # POSIX only; `platforms.check_platform` refused the rest

        delay, said = POLL[0], False
        while True:
            try:
                fd, mode = os.open(path, os.O_RDWR | os.O_CREAT, 0o666), fcntl.LOCK_EX
            except PermissionError:  # another user's, not writable by us
                try:
                    fd, mode = os.open(path, os.O_RDONLY), fcntl.LOCK_SH
                except FileNotFoundError:
                    continue  # removed meanwhile: create our own
            try:
                fcntl.lockf(fd, mode | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in UNSUPPORTED:
                    self._go_lock_free(path, exc)
                    return None
                if exc.errno not in BUSY:
                    raise
                if not said:  # never silent: a run waiting on another says for what
                    said = True
                    self._say(f"{final}: another process is fetching it; waiting for it")
                await anyio.sleep(delay)
                delay = min(POLL[1], delay * 2)
                continue
            if same_file(fd, path):
                return fd, mode == fcntl.LOCK_EX
            os.close(fd)  # its holder removed it before we got it: lock the new one

    def _go_lock_free(self, path: Path, exc: OSError) -> None:
        with contextlib.suppress(OSError):
            path.unlink()
        if not self.lock_free:
            self.lock_free = True
            self._say(
                f"{path.parent}: no file locks here ({errno.errorcode.get(exc.errno or 0)}); "
                "going on without them: files are still verified and renamed into place "
                "whole, but runs sharing this cache may fetch the same file"
            )


def remove_if_free(path: str | Path) -> bool:
    """Remove the lock file `path` if nobody holds it, as its holder would have:
    locked exclusively, and only if still the file locked. True if it went. A file
    we may not write is left: an empty lock file nobody holds blocks nobody."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, PermissionError):
        return False
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in BUSY or exc.errno in UNSUPPORTED:
                return False
            raise
        if not same_file(fd, path):
            return False
        os.unlink(path)
    finally:
        os.close(fd)
    return True


def lock_held(path: str | Path) -> bool | None:
    """Whether someone holds a lock on `path`; None if that cannot be told."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        return True if exc.errno in BUSY else None
    finally:
        os.close(fd)
    return False


def same_file(fd: int, path: str | Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
