"""What the operating system must allow: POSIX, and enough open files for `--jobs`;
and the event loop to run on.

Linux and macOS are supported. Windows lacks the POSIX record locks that keep
processes sharing a cache from fetching one file twice, so it is refused with
one line rather than half-working. macOS starts shells with a soft limit of
256 open files, which a sync at the default `--jobs` nearly reaches (a socket
per request in flight, a lock and a temporary file per file being fetched):
the soft limit is raised toward the hard one, and `--jobs` is lowered, with a
note, only where even the hard limit is too low.
"""

import os
import sys

from ..errors import SyncError

try:  # a faster event loop where it is installed
    import uvloop  # noqa: F401

    EVENT_LOOP = {"use_uvloop": True}  # anyio's backend options
except ImportError:
    EVENT_LOOP = {}

FILES_PER_JOB = 3  # a socket, a lock file, a temporary file
FILES_BASE = 64  # the interpreter, worker threads' connections, the cache config


def check_platform() -> None:
    if os.name != "posix":
        raise SyncError(
            f"{sys.platform} is not supported: crds-s3-sync needs a POSIX system (Linux or"
            " macOS; on Windows, use WSL)"
        )


def fit_open_files(jobs: int) -> tuple[int, str | None]:
    """`jobs`, or fewer if the open-file limit cannot be raised enough; and a note
    saying so."""
    import resource  # POSIX only: imported once the platform is known to be one

    needed = FILES_BASE + FILES_PER_JOB * jobs
    wanted = 2 * needed  # headroom: the estimate is an estimate
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return jobs, None
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):  # macOS refuses more than OPEN_MAX whatever the hard limit
        target = soft
    if target >= needed:
        return jobs, None
    fitted = max(1, (target - FILES_BASE) // FILES_PER_JOB)
    return fitted, (
        f"note: the open-file limit is {target}, too low for --jobs {jobs}: using --jobs "
        f"{fitted} (raise it with `ulimit -n {needed}`)"
    )
