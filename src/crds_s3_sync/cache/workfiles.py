"""Work in progress in the cache, whose it is, and clearing it away once its owner
is provably gone.

A sync writes under hidden names beside the final ones: `.NAME.<run>-<n>.tmp`
(a file being written), `.NAME.lock` (`locks`), `.NAME.part` and
`.NAME.part.json` (`partial`). <run> is `HOST-PID-TOKEN` (the token tells
apart processes of one pid in different containers), and while a process may
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
  just as their holder would before letting go;
- the part files of a file that is in place, unless its lock is held.

Other part files are resumable work, not debris: a run keeps them, and `--purge`
removes those of files no longer planned (`audit`). A sweep leaves its own run's
files alone and tests no lock its own process could hold: POSIX locks never
conflict within one process, and closing a file drops them. So one process runs
one sync at a time.
"""

import contextlib
import itertools
import os
import secrets
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import ClassVar

from ..errors import SyncError
from .locks import UNSUPPORTED, lock_held, remove_if_free, same_file

HOST = socket.gethostname().replace(".", "-")[:32]  # shared caches span machines
DEBRIS_AGE = 24 * 3600  # seconds before another host's temporary file counts as debris
_RUN_FILE = (".crds-s3-sync.", ".run")
_serial = itertools.count()
_tokens: dict[int, str] = {}


def run_id() -> str:
    """This process's run (a function: a forked process has an id of its own)."""
    pid = os.getpid()
    if pid not in _tokens:
        _tokens[pid] = secrets.token_hex(3)
    return f"{HOST}-{pid}-{_tokens[pid]}"


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

    _held: ClassVar[set[Path]] = set()  # this process's, for one sync at a time

    def __init__(self, cache: Path) -> None:
        self.path = cache / f"{_RUN_FILE[0]}{run_id()}{_RUN_FILE[1]}"
        self._fd: int | None = None

    def __enter__(self) -> "RunFile":
        import fcntl  # POSIX only; `platforms.check_platform` refused the rest

        if self.path in RunFile._held:
            raise SyncError(
                f"{self.path.parent}: this process is already syncing into this cache; "
                "run syncs that share a cache one at a time per process"
            )
        RunFile._held.add(self.path)
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError:
                return self
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in UNSUPPORTED:  # no locks on this file system: go without
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                return self
            if same_file(fd, self.path):
                self._fd = fd
            else:
                os.close(fd)  # a sweep took it for a dead run's: make it again
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        RunFile._held.discard(self.path)
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
            elif name.endswith((".part", ".part.json")):
                final = os.path.join(directory, name[1:].removesuffix(".json")[: -len(".part")])
                lock = os.path.join(directory, f"{name[: name.rindex('.part')]}.lock")
                if os.path.exists(final) and not lock_held(lock):
                    removed += _unlink(entry.path)
    with contextlib.suppress(OSError):
        for entry in os.scandir(cache):
            if _run_of_file(entry.name) not in (None, run_id()):
                removed += _remove_if_free(entry.path)
    return removed


def _owner(name: str) -> str | None:
    """The run of a temporary name `.NAME.HOST-PID-TOKEN-N.tmp`, or None if it is
    not one."""
    _, dot, tail = name[: -len(".tmp")].rpartition(".")
    run, _, serial = tail.rpartition("-")
    host, pid, token = _parts(run)
    if not (dot and host and pid.isdigit() and token and serial.isdigit()):
        return None
    return run


def _parts(run: str) -> tuple[str, str, str]:
    """(host, pid, token) of a run id."""
    rest, _, token = run.rpartition("-")
    host, _, pid = rest.rpartition("-")
    return host, pid, token


def _run_of_file(name: str) -> str | None:
    start, end = _RUN_FILE
    if name.startswith(start) and name.endswith(end) and len(name) > len(start) + len(end):
        return name[len(start) : -len(end)]
    return None


def _gone(cache: Path, run: str) -> bool:
    """Whether run `run` has certainly ended: nobody holds its run file, or, without
    one to test, its process (on this host) is not running."""
    held = lock_held(cache / f"{_RUN_FILE[0]}{run}{_RUN_FILE[1]}")
    if held is not None:
        return not held
    host, pid, _ = _parts(run)
    if host != HOST:
        return True  # only the age can tell (`sweep`)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # running, as another user
        pass
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
