"""Work in progress in the cache, whose it is, and clearing it away once its owner
is provably gone.

A sync writes under hidden names beside the final ones: `.NAME.<run>-<n>.tmp`
(a file being written), `.NAME.lock` (`locks`), `.NAME.part` and
`.NAME.part.json` (`partial`). <run> is `HOST-PID`, and while a process may
write such names it holds a POSIX lock on its run file,
`.crds-s3-sync.<run>.run` at the cache's root. A run killed with SIGKILL, or a
node that lost power, leaves them behind; the next run (over the directories
it plans into) and `--purge` (over the observatory's) remove:

- a temporary file whose run file nobody holds (a non-blocking `lockf` test).
  Where there is no run file to test (locks unavailable) it goes once the
  process named is not running. A temporary file of another host also has to be
  older than DEBRIS_AGE: a lock test across NFS clients is only as good as their
  lock manager, and a process id means nothing on another machine;
- a file's lock file, and a run file, that nobody holds: taken, then removed,
  just as their holder would before letting go.

Part files are resumable work, not debris: a run keeps them, and `--purge`
removes those of files no longer planned (`audit`). A sweep runs before its own
process holds any lock: POSIX locks never conflict within one process, and
closing a file drops them.
"""

import contextlib
import itertools
import os
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .locks import BUSY, remove_if_free

HOST = socket.gethostname().replace(".", "-")[:32]  # shared caches span machines
DEBRIS_AGE = 24 * 3600  # seconds before another host's temporary file counts as debris
_RUN_FILE = (".crds-s3-sync.", ".run")
_serial = itertools.count()


def run_id() -> str:
    """This process's run (a function: helper processes fork with their own id)."""
    return f"{HOST}-{os.getpid()}"


def temporary_name(final: Path) -> str:
    """A hidden name beside `final`: same file system, so the rename is atomic.

    Names from the bucket never start with '.', so this cannot collide with one;
    the run and a counter keep concurrent writers apart. A string, not a Path:
    small files make this a hot path.
    """
    directory, name = os.path.split(final)
    return f"{directory}/.{name}.{run_id()}-{next(_serial)}.tmp"


class RunFile:
    """Held (`with RunFile(cache):`) while this process may leave work files in the
    cache: it tells a sweep that they are not debris. Where the file system has no
    locks, or the cache root is not writable, there is no run file, and a sweep falls
    back on whether the process runs."""

    def __init__(self, cache: Path) -> None:
        self.path = cache / f"{_RUN_FILE[0]}{run_id()}{_RUN_FILE[1]}"
        self._fd: int | None = None

    def __enter__(self) -> "RunFile":
        import fcntl  # POSIX only; `platforms.check_platform` refused the rest

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return self
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # no locks on this file system: go without
            os.close(fd)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return self
        self._fd = fd
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            os.close(self._fd)
            self._fd = None


def sweep(cache: Path, directories: Iterable[Path]) -> int:
    """Remove the debris of runs that are gone from `directories`, and the run files
    nobody holds; returns how many files went."""
    removed = 0
    owners: dict[str, bool] = {}  # run id -> gone, tested once per sweep
    now = time.time()
    for directory in {*directories}:
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue  # not there yet, or not ours to read
        for entry in entries:
            name = entry.name
            if not name.startswith("."):
                continue
            if name.endswith(".tmp"):
                run = _owner(name)
                if run is None or run == run_id():
                    continue
                if run not in owners:
                    owners[run] = _gone(cache, run)
                if owners[run] and (run.startswith(f"{HOST}-") or _older(entry, now)):
                    removed += _unlink(entry.path)
            elif name.endswith(".lock"):
                removed += _remove_if_free(entry.path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(cache):
            if _run_of_file(entry.name) not in (None, run_id()):
                removed += _remove_if_free(entry.path)
    return removed


def _owner(name: str) -> str | None:
    """The run of a temporary name `.NAME.HOST-PID-N.tmp`, or None if it is not one."""
    stem, _, serial = name[: -len(".tmp")].rpartition("-")
    stem, _, pid = stem.rpartition("-")
    _, dot, host = stem.rpartition(".")
    if not (dot and host and pid.isdigit() and serial.isdigit()):
        return None
    return f"{host}-{pid}"


def _run_of_file(name: str) -> str | None:
    start, end = _RUN_FILE
    if name.startswith(start) and name.endswith(end) and len(name) > len(start) + len(end):
        return name[len(start) : -len(end)]
    return None


def _gone(cache: Path, run: str) -> bool:
    """Whether run `run` has certainly ended: nobody holds its run file, or, without
    one to test, its process (on this host) is not running."""
    held = _held(cache / f"{_RUN_FILE[0]}{run}{_RUN_FILE[1]}")
    if held is not None:
        return not held
    host, _, pid = run.rpartition("-")
    if host != HOST:
        return True  # only the age can tell (`sweep`)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # running, as another user
    return False


def _held(path: Path) -> bool | None:
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


def _remove_if_free(path: str) -> int:
    try:
        return int(remove_if_free(path))
    except OSError:  # another user's, in a directory not ours to change
        return 0


def _older(entry: os.DirEntry, now: float) -> bool:
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > DEBRIS_AGE
    except OSError:
        return False


def _unlink(path: str) -> int:
    try:
        os.unlink(path)
    except OSError:  # gone meanwhile, or another user's in a directory not ours to change
        return 0
    return 1
