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
"""

import errno
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio

POLL = (0.05, 0.5)  # first and longest wait between tries for a busy lock


def lock_path(final: Path) -> Path:
    return final.with_name(f".{final.name}.lock")


@asynccontextmanager
async def file_lock(final: Path) -> AsyncIterator[None]:
    """Hold the lock for `final`, waiting (without blocking the loop) while another
    process holds it."""
    import fcntl  # POSIX only; `platforms.check_platform` refused the rest

    path, delay = lock_path(final), POLL[0]
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            await anyio.sleep(delay)
            delay = min(POLL[1], delay * 2)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # its holder removed it before we got it: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still ours: nobody can take it while we hold it
        os.close(fd)  # closing drops the lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
